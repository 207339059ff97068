#include "core/snapshot_emit.h"

#include <algorithm>

#include "core/meta_store.h"
#include "structd/base/posix.h"

namespace structd::server {
namespace {

constexpr uint64_t kPieceBytes = 64 << 10;

bool AllZero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// Emits `size` bytes of `file`, hashing every byte (emitted or not).
absl::StatusOr<std::string> EmitFile(const std::string& file, const uint8_t* bytes,
                                     uint64_t size,
                                     const std::function<absl::Status(const SnapshotPiece&)>& emit) {
  Sha256 hash;
  bool emitted = false;
  for (uint64_t at = 0; at < size || (size == 0 && !emitted); at += kPieceBytes) {
    const size_t n = static_cast<size_t>(std::min(kPieceBytes, size - at));
    hash.Update(bytes + at, n);
    const bool last = at + n == size;
    if (AllZero(bytes + at, n) && !(last && !emitted)) continue;
    const std::string_view data(reinterpret_cast<const char*>(bytes + at), n);
    if (absl::Status s = emit(SnapshotPiece{file, size, at, data}); !s.ok()) return s;
    emitted = true;
  }
  return hash.HexDigest();
}

}  // namespace

absl::StatusOr<SnapshotManifest> EmitSnapshot(
    ChannelImage& image, const std::string& daemon_version,
    const std::function<absl::Status(const SnapshotPiece&)>& emit) {
  SnapshotManifest manifest;
  manifest.architecture = HostArchitecture();
  manifest.daemon_version = daemon_version;
  manifest.taken_unix_ms = base::NowUnixMs();
  manifest.channel_id = image.meta.id;
  manifest.channel_name = image.meta.name;
  manifest.arena_format_version = image.arena_format_version;
  manifest.extent_size = image.identity.extent_size;
  manifest.max_extents = image.identity.max_extents;
  manifest.extent_count = image.extent_count;
  manifest.epoch = image.identity.epoch;
  manifest.live_instances = image.live_instances;
  const std::string meta_file(kSnapshotMetaFile);
  const std::string meta = RenderChannelMeta(image.meta);
  absl::StatusOr<std::string> meta_hash =
      EmitFile(meta_file, reinterpret_cast<const uint8_t*>(meta.data()), meta.size(), emit);
  if (!meta_hash.ok()) return meta_hash.status();
  manifest.files.push_back({meta_file, meta.size(), *meta_hash});
  for (ChannelImage::File& f : image.files) {
    absl::StatusOr<std::string> hash = EmitFile(f.name, f.bytes.get(), f.size, emit);
    if (!hash.ok()) return hash.status();
    manifest.files.push_back({f.name, f.size, *hash});
    f.bytes.reset();  // emitted: give the memory back now
  }
  const std::string manifest_file(kSnapshotManifestFile);
  const std::string text = RenderSnapshotManifest(manifest);
  if (absl::Status s = emit(SnapshotPiece{manifest_file, text.size(), 0, text}); !s.ok()) {
    return s;
  }
  return manifest;
}

}  // namespace structd::server
