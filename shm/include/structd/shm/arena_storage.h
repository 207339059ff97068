#ifndef STRUCTD_SHM_ARENA_STORAGE_H_
#define STRUCTD_SHM_ARENA_STORAGE_H_

// Where the owner of an arena keeps its files: a directory (the default,
// survives any restart of the daemon until the machine reboots) or sealed
// memfds (sizes fixed by the kernel, so no process holding a descriptor can
// cut or grow one; kept across a daemon restart only by a descriptor store
// such as systemd's). doc/security.md weighs the two.
//
// These are per-process objects of the owner; nothing here lives in shared
// memory. Thread safety: every method may be called from many threads.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/base/posix.h"

namespace structd::shm {

enum class Access { kReadOnly, kReadWrite };

// Which file of an arena: the header, or an extent.
struct ArenaFile {
  static constexpr int32_t kHeader = -1;
  int32_t extent = kHeader;  // kHeader, or an extent id
  bool is_header() const { return extent == kHeader; }
  friend bool operator<(ArenaFile a, ArenaFile b) { return a.extent < b.extent; }
};

// A file built but not yet visible under its name (Prepare, then Publish).
// A temporary name, where one was needed, is removed with it.
struct PreparedFile {
  base::UniqueFd fd;
  std::string temp_name;  // empty: the file has no name yet
  PreparedFile() = default;
  PreparedFile(PreparedFile&&) = default;
  PreparedFile& operator=(PreparedFile&&) = default;
  ~PreparedFile();
};

// st_size and st_blocks * 512 of one file.
struct FileSize {
  uint64_t bytes = 0;
  uint64_t allocated = 0;
};

class ArenaStorage {
 public:
  virtual ~ArenaStorage() = default;
  // How messages name the storage and one of its files.
  virtual std::string label() const = 0;
  virtual std::string Name(ArenaFile file) const = 0;
  // A new descriptor of `file`. NotFound if it does not exist.
  virtual absl::StatusOr<base::UniqueFd> Open(ArenaFile file, Access access) const = 0;
  // A new file of `bytes`, every page backed now (ResourceExhausted when
  // the memory is not there: a full file system fails here, never with
  // SIGBUS later). Nobody else can reach it before Publish.
  virtual absl::StatusOr<PreparedFile> Prepare(ArenaFile file, uint64_t bytes) = 0;
  // Makes `prepared` the file `file`; `prepared.fd` stays usable.
  // AlreadyExists if `file` exists: a file is never replaced.
  virtual absl::Status Publish(ArenaFile file, PreparedFile& prepared) = 0;
  // Ids of the extents that exist, ascending.
  virtual std::vector<uint32_t> ExtentIds() const = 0;
  // True if the kernel keeps every published file's size fixed, so that
  // nobody holding a descriptor can cut or grow it.
  virtual bool sizes_sealed() const = 0;
  // The size of `file` now, or nullopt if it does not exist.
  virtual std::optional<FileSize> Size(ArenaFile file) const = 0;
  // Removes every file (a dropped channel, a failed create).
  virtual void RemoveAll() = 0;
};

// An arena's files in directory `dir`: "arena" and "extent.N". Files are
// built unnamed (O_TMPFILE; a uniquely named temporary where the file
// system lacks it) and linked into place, created with `file_mode`.
std::unique_ptr<ArenaStorage> DirectoryStorage(std::string dir, uint32_t file_mode = 0600);

// An arena's files as memfds sealed against shrinking and growing
// (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) when published. The storage
// holds one descriptor per file; they live as long as some process holds
// one, so the owner hands each to a keeper (Keeper::keep) that outlives
// it, and gets them back at its next start (the `kept` constructor
// argument).
class SealedMemoryStorage final : public ArenaStorage {
 public:
  struct Keeper {
    // Called once per published file, with the storage's descriptor (the
    // callee dups what it keeps).
    std::function<void(ArenaFile, int fd)> keep;
    // Called once per file by RemoveAll.
    std::function<void(ArenaFile)> forget;
  };
  // `label` names the arena in messages and memfd names. `kept`: the
  // descriptors a keeper handed back; each must be a memfd carrying the
  // seals, or it is refused (DataLoss from Check()).
  SealedMemoryStorage(std::string label, Keeper keeper,
                      std::map<ArenaFile, base::UniqueFd> kept = {});

  // OK, or DataLoss naming a kept descriptor that is not a sealed memfd
  // (it was left out).
  absl::Status Check() const { return check_; }

  std::string label() const override { return label_; }
  std::string Name(ArenaFile file) const override;
  absl::StatusOr<base::UniqueFd> Open(ArenaFile file, Access access) const override;
  absl::StatusOr<PreparedFile> Prepare(ArenaFile file, uint64_t bytes) override;
  absl::Status Publish(ArenaFile file, PreparedFile& prepared) override;
  std::vector<uint32_t> ExtentIds() const override;
  bool sizes_sealed() const override { return true; }
  std::optional<FileSize> Size(ArenaFile file) const override;
  void RemoveAll() override;

 private:
  const std::string label_;
  const Keeper keeper_;
  absl::Status check_;
  mutable std::mutex mu_;
  std::map<ArenaFile, base::UniqueFd> files_;  // guarded by mu_
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_ARENA_STORAGE_H_
