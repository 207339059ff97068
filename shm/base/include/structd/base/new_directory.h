#ifndef STRUCTD_BASE_NEW_DIRECTORY_H_
#define STRUCTD_BASE_NEW_DIRECTORY_H_

// A directory that appears whole or not at all (snapshot directories):
// its files are built in DIR.partial-PID beside DIR, written sparse
// (ranges never written stay holes), sized, synced, and the directory is
// renamed to DIR by Finish(). Destroyed unfinished, it removes what it
// wrote. Used by structctl (snapshots streamed from the daemon) and by the
// daemon (its periodic snapshots).
//
// Thread safety: none; one writer per object.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "structd/base/posix.h"

namespace structd::base {

class NewDirectory {
 public:
  // InvalidArgument if `dir` exists (and is not an empty directory) or
  // its parent is not a directory; Internal if the temporary directory
  // cannot be made.
  static absl::StatusOr<NewDirectory> Create(std::string dir);
  // A moved-from NewDirectory owns nothing (its destructor removes nothing).
  NewDirectory(NewDirectory&& o) noexcept;
  NewDirectory& operator=(NewDirectory&&) = delete;
  ~NewDirectory();

  // Writes `data` at `offset` of file `name` (created on first use; a
  // plain name: no '/', not starting with '.'), whose final size is
  // `file_size`.
  absl::Status Write(const std::string& name, uint64_t file_size, uint64_t offset,
                     std::string_view data);
  bool Has(const std::string& name) const { return files_.count(name) > 0; }
  // Sizes and syncs every file, renames the directory to DIR, syncs DIR's
  // parent.
  absl::Status Finish();

  const std::string& dir() const { return dir_; }
  uint64_t bytes_written() const { return bytes_written_; }
  uint64_t bytes_total() const;  // of the files' final sizes
  size_t files() const { return files_.size(); }

 private:
  NewDirectory() = default;
  struct File {
    UniqueFd fd;
    uint64_t size = 0;
  };
  std::string dir_;
  std::string temp_;
  std::map<std::string, File> files_;
  uint64_t bytes_written_ = 0;
  bool finished_ = false;
};

}  // namespace structd::base

#endif  // STRUCTD_BASE_NEW_DIRECTORY_H_
