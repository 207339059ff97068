#ifndef STRUCTD_SERVER_CORE_LEDGER_H_
#define STRUCTD_SERVER_CORE_LEDGER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/base/posix.h"
#include "structd/shm/mapping_guard.h"
#include "structd/shm/ref.h"

namespace structd::server {

// One distinct reference a session owns, and how many times it owns it.
struct LedgerEntry {
  shm::Ref ref;
  uint64_t count = 0;
};

// The references one session owns in one channel: a multiset of Refs kept
// in a file on tmpfs (an open-addressing hash table of (ref, count) slots,
// one slot per distinct ref), so that after a crash of the client *or of
// the daemon* exactly what the session held can be released — nothing
// more, nothing less. Owning one ref many times costs one slot: every
// operation is O(1) expected, whatever the multiplicity.
//
// Entries name blocks: a ref and another ref to the same block with
// another generation are one entry, and a lookup with the newer one renews
// the entry's generation. A session's sole reference to an instance it
// recycled in place (shm/local_recycle.h) is thus still the same entry,
// without the daemon being told. Callers pass refs they resolved live.
//
// Crash atomicity: every change becomes visible through one 8-byte store
// (a new slot's count is written before its ref; a count is changed in
// place; a removed slot's ref becomes a tombstone), so a daemon killed at
// any instruction leaves the table before or after the change.
//
// Only the daemon maps ledger files; clients never see them. The file is
// still validated on open (invariant 8): a damaged ledger fails to open
// with DataLoss instead of being trusted. While open, the table's geometry
// and counters live in this object: the header in the file is written for
// the next Open but never read back, so bytes scribbled into a mapped
// ledger can add or hide entries (each is still checked before it is
// released) but cannot steer an access outside the mapping.
//
// Thread safety: none; the owning channel's lock serializes calls.
class Ledger {
 public:
  // Creates an empty ledger at `path` (replacing any file there). The
  // mapping is registered with the SIGBUS guard under `damage` (if given):
  // a file truncated behind the daemon's back then sets it instead of
  // killing the process.
  static absl::StatusOr<std::unique_ptr<Ledger>> Create(const std::string& path,
                                                        uint64_t session_tag,
                                                        shm::DamageFlag* damage = nullptr);
  // Opens an existing ledger (after a daemon restart). A ledger of format 1
  // (one slot per reference) is converted in place.
  static absl::StatusOr<std::unique_ptr<Ledger>> Open(const std::string& path,
                                                      shm::DamageFlag* damage = nullptr);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Records one more owned reference. ResourceExhausted if the file system
  // cannot hold a bigger table (nothing changes then).
  absl::Status Add(shm::Ref ref);
  // Adds all or none.
  absl::Status AddAll(const std::vector<shm::Ref>& refs);
  // Removes one owned reference; false if the session owns none to `ref`.
  bool Remove(shm::Ref ref);
  // How many references to `ref` the session owns.
  uint64_t Count(shm::Ref ref) const;
  bool Contains(shm::Ref ref) const { return Count(ref) != 0; }
  // Makes the session own exactly `count` references to `ref` (0 removes
  // it). Idempotent: recovery replays it after a crash.
  absl::Status SetCount(shm::Ref ref, uint64_t count);
  // Every distinct ref with its count.
  std::vector<LedgerEntry> Entries() const;
  // Owned references, multiplicity included.
  uint64_t size() const;
  uint64_t session_tag() const;
  // The session's record in the arena (shm/session_record.h) and its tag,
  // kept here because only the daemon writes this file (a member cannot
  // make the daemon treat another instance as a record). Null ref: none.
  void SetRecord(shm::Ref record, uint32_t tag);
  shm::Ref record() const { return shm::Ref::FromBits(record_); }
  uint32_t record_tag() const { return static_cast<uint32_t>(session_tag_); }
  const std::string& path() const { return path_; }
  // Deletes the file. The object must not be used afterwards.
  void Unlink();

 private:
  struct Header;
  struct Slot;
  struct Table;
  static absl::StatusOr<Table> WriteTable(const std::string& path,
                                          uint64_t session_tag, uint64_t record,
                                          uint64_t capacity,
                                          const std::vector<LedgerEntry>& entries);
  Ledger(std::string path, const Table& table, uint64_t session_tag,
         uint64_t used, uint64_t tombstones, uint64_t refs);
  // Rewrites the table without tombstones, with at least `min_capacity`
  // slots and room for twice the entries there are.
  absl::Status Rehash(uint64_t min_capacity);
  Slot* slots() const;
  // The slot holding `ref`, or null.
  Slot* Find(shm::Ref ref) const;
  // Copies the counters into the file's header, for the next Open.
  void PublishCounters();

  std::string path_;
  base::UniqueFd fd_;
  uint8_t* map_;
  uint64_t map_bytes_;
  uint64_t capacity_;  // slots; a power of two, from the mapping's size
  uint64_t session_tag_;
  uint64_t record_ = 0;
  uint64_t used_;        // slots holding a ref
  uint64_t tombstones_;  // slots whose ref was removed
  uint64_t refs_;        // owned references (sum of counts)
  shm::DamageFlag* damage_ = nullptr;  // not owned; outlives this ledger
  shm::GuardedMapping guard_;          // of map_; reset before munmap
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_LEDGER_H_
