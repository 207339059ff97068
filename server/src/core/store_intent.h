#ifndef STRUCTD_SERVER_CORE_STORE_INTENT_H_
#define STRUCTD_SERVER_CORE_STORE_INTENT_H_

// The write-ahead record that makes Channel::StoreRefs crash-atomic.
//
// A StoreRefs call changes two places that no single store covers: ref
// fields in the arena, and the calling session's ledger (a moved reference
// leaves it). Before changing either, the channel writes what both will
// hold afterwards to CHANNEL/store.intent (a temporary file renamed into
// place, so it exists whole or not at all); once both are changed, it
// removes the file. A daemon killed in between finds the file at restart
// and replays it: every recorded value is an absolute "set to", so a
// replay is idempotent whatever part had been applied. Then the census
// (Channel::Reconcile) recounts every refcount and releases the values
// the fields held before. Without the file, nothing had been applied.
// Either outcome of the interrupted call therefore holds after recovery.
//
// The file is daemon-private; it is still checked (magic, sizes, an FNV-1a
// checksum) before it is trusted, and each entry is validated again when
// it is replayed.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/shm/ref.h"

namespace structd::server {

struct StoreIntent {
  struct FieldValue {
    shm::Ref target;      // the instance holding the field
    uint32_t offset = 0;  // the ref field's offset in the payload
    shm::Ref value;       // what the field holds afterwards
  };
  struct LedgerCount {
    shm::Ref ref;
    uint64_t count = 0;  // what the session's ledger holds afterwards
  };
  std::string session;
  std::vector<FieldValue> fields;
  std::vector<LedgerCount> counts;
};

// Writes `intent` to `path`, whole or not at all (base::WriteFileAtomically).
absl::Status WriteStoreIntent(const std::string& path, const StoreIntent& intent);
// nullopt if there is no file; DataLoss if it is damaged or incomplete
// (which a rename makes impossible unless something else wrote it).
absl::StatusOr<std::optional<StoreIntent>> ReadStoreIntent(const std::string& path);
void RemoveStoreIntent(const std::string& path);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_STORE_INTENT_H_
