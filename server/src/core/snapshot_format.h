#ifndef STRUCTD_SERVER_CORE_SNAPSHOT_FORMAT_H_
#define STRUCTD_SERVER_CORE_SNAPSHOT_FORMAT_H_

// The files of a channel snapshot (doc/snapshots.md): meta.toml (the
// channel's metadata, the state directory's format), the arena's files
// ("arena", "extent.N") byte for byte, and manifest.toml, written last,
// which names every file with its size and SHA-256 and ends with the
// SHA-256 of itself. A snapshot without a manifest did not finish.
//
// Thread safety: value types and free functions; Sha256 is not shared.

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace structd::server {

inline constexpr uint32_t kSnapshotFormatVersion = 1;
inline constexpr std::string_view kSnapshotManifestFile = "manifest.toml";
inline constexpr std::string_view kSnapshotMetaFile = "meta.toml";
// meta.toml above this is refused (a registry is at most a few MiB).
inline constexpr uint64_t kMaxSnapshotMetaBytes = 64ull << 20;

// What the bytes of an arena mean on this host: "x86_64-le-lp64". A
// snapshot restores only where this is the same.
std::string HostArchitecture();

struct SnapshotFileEntry {
  std::string name;    // kSnapshotMetaFile, "arena" or "extent.N"
  uint64_t bytes = 0;
  std::string sha256;  // 64 lower-case hex digits
};

struct SnapshotManifest {
  uint32_t version = kSnapshotFormatVersion;
  std::string architecture;
  std::string daemon_version;
  uint64_t taken_unix_ms = 0;
  std::string channel_id;
  std::string channel_name;
  uint32_t arena_format_version = 0;
  uint64_t extent_size = 0;
  uint32_t max_extents = 0;
  uint32_t extent_count = 0;
  uint64_t epoch = 0;
  uint64_t live_instances = 0;  // for people reading it; restore recounts
  std::vector<SnapshotFileEntry> files;  // meta.toml, arena, extent.0, ...

  const SnapshotFileEntry* Find(std::string_view name) const;
};

// manifest.toml's text, its last line the SHA-256 of everything before.
std::string RenderSnapshotManifest(const SnapshotManifest& manifest);
// Parses and checks a manifest: DataLoss for a damaged one (not TOML,
// missing keys, checksum mismatch, file names or sizes that cannot be),
// FailedPrecondition for one this build cannot restore (another format
// version or architecture). Messages say what to do.
absl::StatusOr<SnapshotManifest> ParseSnapshotManifest(std::string_view text);

// True for a file name a snapshot may hold: meta.toml, arena, extent.N.
bool IsSnapshotDataFile(std::string_view name);

// Incremental SHA-256 (OpenSSL's EVP).
class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  // 64 lower-case hex digits. Ends the computation.
  std::string HexDigest();

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};
std::string Sha256Hex(std::string_view data);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_SNAPSHOT_FORMAT_H_
