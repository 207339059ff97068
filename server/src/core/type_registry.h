#ifndef STRUCTD_SERVER_CORE_TYPE_REGISTRY_H_
#define STRUCTD_SERVER_CORE_TYPE_REGISTRY_H_

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/shm/layout.h"
#include "structd/shm/type_token.h"

namespace structd::server {

struct RegisteredType {
  std::string key;
  shm::TypeToken token;
  uint32_t type_index = 0;  // >= 1; the value in instance headers
  shm::Layout layout;
};

// One channel's registry: registration key -> (token, layout). Keys are
// scoped to the channel. Entries are never removed or changed (invariant
// 1), so pointers to them stay valid for the registry's lifetime.
//
// Thread safety: none; the channel's lock serializes calls.
class TypeRegistry {
 public:
  explicit TypeRegistry(shm::LayoutLimits limits = {}) : limits_(limits) {}

  struct RegisterResult {
    const RegisteredType* type;
    bool created;
  };
  // Same key + identical layout: the existing entry (created = false).
  // Same key + different layout: FailedPrecondition showing both layouts.
  // New key on a sealed registry: FailedPrecondition.
  // Malformed fields: InvalidArgument.
  absl::StatusOr<RegisterResult> Register(const std::string& key,
                                          std::vector<shm::FieldSpec> fields);
  // Re-creates an entry read back from disk (daemon restart). Tokens and
  // type indexes are kept as they were.
  absl::Status Restore(const std::string& key, shm::TypeToken token,
                       uint32_t type_index, std::vector<shm::FieldSpec> fields);

  // NotFound (the same message for any unknown token) if absent.
  absl::StatusOr<const RegisteredType*> Find(shm::TypeToken token) const;
  // nullptr if absent.
  const RegisteredType* FindByIndex(uint32_t type_index) const;
  const RegisteredType* FindByKey(const std::string& key) const;
  // In registration order.
  std::vector<const RegisteredType*> List() const;
  size_t size() const { return types_.size(); }

  void Seal() { sealed_ = true; }
  bool sealed() const { return sealed_; }
  const shm::LayoutLimits& limits() const { return limits_; }

 private:
  shm::LayoutLimits limits_;
  bool sealed_ = false;
  std::deque<RegisteredType> types_;  // stable addresses
  std::map<std::string, const RegisteredType*> by_key_;
  std::map<shm::TypeToken, const RegisteredType*> by_token_;
  std::map<uint32_t, const RegisteredType*> by_index_;
};

// Validates a registration key: 1 to 128 printable ASCII characters.
absl::Status ValidateTypeKey(const std::string& key);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_TYPE_REGISTRY_H_
