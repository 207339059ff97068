#ifndef STRUCTD_CLIENT_STRUCTCTL_SNAPSHOT_DIR_H_
#define STRUCTD_CLIENT_STRUCTCTL_SNAPSHOT_DIR_H_

// A snapshot directory on disk (doc/snapshots.md), as structctl writes and
// reads it. The daemon decides what the bytes mean and checks them; this
// only moves files.
//
// Thread safety: none (one command uses each).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/base/new_directory.h"
#include "structd/base/posix.h"
#include "structd/client/admin.h"

namespace structd::structctl {

// Writes the chunks of AdminClient::Snapshot into a new directory
// (base::NewDirectory: DIR is whole or absent).
class SnapshotWriter {
 public:
  // InvalidArgument if `dir` exists (and is not an empty directory) or
  // its parent does not.
  static absl::StatusOr<SnapshotWriter> Create(std::string dir);

  absl::Status Write(const client::AdminClient::SnapshotChunk& chunk);
  // Sizes the files, syncs them and renames the directory into place.
  // DataLoss if the stream ended before manifest.toml.
  absl::Status Finish();

  uint64_t bytes_received() const { return dir_.bytes_written(); }
  uint64_t bytes_total() const { return dir_.bytes_total(); }
  size_t files() const { return dir_.files(); }

 private:
  explicit SnapshotWriter(base::NewDirectory dir) : dir_(std::move(dir)) {}
  base::NewDirectory dir_;
};

// A snapshot directory to restore: its manifest's text and the files it
// names, read in chunks (all-zero chunks skipped: the daemon's files start
// as zeros).
class SnapshotReader {
 public:
  // DataLoss (saying what) if `dir` has no manifest.toml, the manifest
  // names no files, or a file it names is missing or of another size.
  static absl::StatusOr<SnapshotReader> Open(const std::string& dir);

  const std::string& manifest() const { return manifest_; }
  std::string channel_name() const { return channel_name_; }
  uint64_t bytes_total() const;
  // Fills the next non-zero chunk; false after the last.
  absl::StatusOr<bool> Next(client::AdminClient::SnapshotChunk& chunk);

 private:
  struct File {
    std::string name;
    uint64_t size = 0;
  };
  std::string dir_;
  std::string manifest_;
  std::string channel_name_;
  std::vector<File> files_;
  size_t file_ = 0;        // the file being read
  uint64_t offset_ = 0;    // in it
  base::UniqueFd fd_;      // of files_[file_], once opened
};

}  // namespace structd::structctl

#endif  // STRUCTD_CLIENT_STRUCTCTL_SNAPSHOT_DIR_H_
