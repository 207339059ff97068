#ifndef STRUCTD_SERVER_CORE_SNAPSHOT_EMIT_H_
#define STRUCTD_SERVER_CORE_SNAPSHOT_EMIT_H_

// A captured channel (Channel::CaptureImage) turned into the files of a
// snapshot (core/snapshot_format.h), piece by piece, for whoever stores
// them: the Admin stream to structctl, or the daemon's periodic snapshots
// into a directory.
//
// Thread safety: a free function over the caller's image.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/channel.h"
#include "core/snapshot_format.h"

namespace structd::server {

// One piece of a snapshot file: `data` goes at `offset` of `file`, whose
// whole size is `file_size`.
struct SnapshotPiece {
  const std::string& file;
  uint64_t file_size;
  uint64_t offset;
  std::string_view data;
};

// Emits meta.toml, then the arena header and the extents in pieces of at
// most 1 MiB (all-zero pieces skipped, except each file's last one, so
// every file is named), then manifest.toml whole. Frees each extent's
// copy once emitted. Stops at the first error `emit` returns and returns
// it; else returns the manifest written.
absl::StatusOr<SnapshotManifest> EmitSnapshot(
    ChannelImage& image, const std::string& daemon_version,
    const std::function<absl::Status(const SnapshotPiece&)>& emit);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_SNAPSHOT_EMIT_H_
