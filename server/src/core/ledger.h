#ifndef STRUCTD_SERVER_CORE_LEDGER_H_
#define STRUCTD_SERVER_CORE_LEDGER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/shm/ref.h"

namespace structd::server {

// The references one session owns in one channel: a multiset of Refs kept
// in a file on tmpfs (an open-addressing hash table of single-word entries),
// so that after a crash of the client *or of the daemon* exactly what the
// session held can be released — nothing more, nothing less.
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
  // Creates an empty ledger at `path` (replacing any file there).
  static absl::StatusOr<std::unique_ptr<Ledger>> Create(const std::string& path,
                                                        uint64_t session_tag);
  // Opens an existing ledger (after a daemon restart).
  static absl::StatusOr<std::unique_ptr<Ledger>> Open(const std::string& path);
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
  // True if at least one entry is `ref`.
  bool Contains(shm::Ref ref) const;
  // Every entry (a ref appears once per owned reference).
  std::vector<shm::Ref> Entries() const;
  uint64_t size() const;
  uint64_t session_tag() const;
  const std::string& path() const { return path_; }
  // Deletes the file. The object must not be used afterwards.
  void Unlink();

 private:
  struct Header;
  struct Table;
  static absl::StatusOr<Table> WriteTable(const std::string& path,
                                          uint64_t session_tag,
                                          uint64_t capacity,
                                          const std::vector<shm::Ref>& entries);
  Ledger(std::string path, const Table& table, uint64_t session_tag,
         uint64_t used, uint64_t tombstones);
  // Rewrites the table without tombstones, with at least `min_capacity`
  // slots and room for twice the entries there are.
  absl::Status Rehash(uint64_t min_capacity);
  uint64_t* slots() const;
  // Copies the counters into the file's header, for the next Open.
  void PublishCounters();

  std::string path_;
  int fd_;
  uint8_t* map_;
  uint64_t map_bytes_;
  uint64_t capacity_;  // slots; a power of two, from the mapping's size
  uint64_t session_tag_;
  uint64_t used_;
  uint64_t tombstones_;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_LEDGER_H_
