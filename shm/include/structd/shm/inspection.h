#ifndef STRUCTD_SHM_INSPECTION_H_
#define STRUCTD_SHM_INSPECTION_H_

// Plain descriptions of what an arena holds, for operators: the daemon's
// admin calls produce them, the wire carries them (admin.proto), and the
// client library's AdminClient hands them back. One definition for both
// sides of the wire. Process-local values (no shared memory in here).

#include <cstdint>
#include <string>
#include <vector>

#include "structd/shm/ref.h"
#include "structd/shm/type_token.h"

namespace structd::shm {

// Instances of one type in an arena.
struct TypeCount {
  TypeToken token;  // zero for instances of an unknown type index
  std::string key;
  uint64_t count = 0;
  uint64_t bytes = 0;  // block bytes, headers included
};

struct InstanceSummary {
  Ref ref;
  TypeToken token;
  uint32_t refcount = 0;
};

struct InstanceListing {
  std::vector<TypeCount> counts;
  std::vector<InstanceSummary> instances;
  bool truncated = false;  // more instances than the limit asked for
};

struct DecodedInstance;
// One field of a decoded instance, its value as text.
struct DecodedField {
  std::string name;
  std::string type;
  std::string value;
  std::vector<DecodedInstance> target;  // the followed ref, if any (0 or 1)
};
// One instance decoded field by field, following ref fields some hops.
struct DecodedInstance {
  Ref ref;
  TypeToken token;
  std::string key;
  uint32_t refcount = 0;
  uint32_t generation = 0;
  std::vector<DecodedField> fields;
  std::string error;  // why it could not be decoded, if so
};

// One finding of the consistency check.
struct ArenaProblem {
  Ref ref;  // null if not about one instance
  std::string what;
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_INSPECTION_H_
