// Admin: channel snapshots streamed out and restored (doc/snapshots.md).
// The channel copies itself (Channel::CaptureImage) and the core adopts a
// restore (Core::BeginRestore/FinishRestore); this file moves the bytes.

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/channel_restore.h"
#include "core/snapshot_format.h"
#include "rpc/services.h"
#include "spdlog/spdlog.h"
#include "structd/base/posix.h"

namespace structd::server {
namespace {

constexpr uint64_t kChunkBytes = 1 << 20;

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// Streams `size` bytes of `file` in chunks, skipping all-zero ones. Feeds
// every byte (sent or not) to `hash`. False if the client went away.
bool SendFile(grpc::ServerWriter<v1::SnapshotChunk>& writer, const std::string& file,
              const uint8_t* bytes, uint64_t size, Sha256& hash) {
  v1::SnapshotChunk chunk;
  chunk.set_file(file);
  chunk.set_file_size(size);
  bool sent = false;
  for (uint64_t at = 0; at < size; at += kChunkBytes) {
    const size_t n = static_cast<size_t>(std::min(kChunkBytes, size - at));
    hash.Update(bytes + at, n);
    // Always send the last chunk, so every file is named in the stream.
    const bool last = at + n == size;
    if (AllZero(bytes + at, n) && !(last && !sent)) continue;
    chunk.set_offset(at);
    chunk.set_data(bytes + at, n);
    if (!writer.Write(chunk)) return false;
    sent = true;
  }
  return true;
}

}  // namespace

grpc::Status AdminService::SnapshotChannel(grpc::ServerContext* context,
                                           const v1::SnapshotChannelRequest* request,
                                           grpc::ServerWriter<v1::SnapshotChunk>* writer) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  absl::StatusOr<std::shared_ptr<Channel>> ch = core_->Find(request->channel());
  if (!ch.ok()) return ToGrpc(ch.status());
  absl::StatusOr<ChannelImage> image = (*ch)->CaptureImage();
  if (!image.ok()) return ToGrpc(image.status());
  SnapshotManifest manifest;
  manifest.architecture = HostArchitecture();
  manifest.daemon_version = info_.version;
  manifest.taken_unix_ms = base::NowUnixMs();
  manifest.channel_id = image->meta.id;
  manifest.channel_name = image->meta.name;
  manifest.arena_format_version = image->arena_format_version;
  manifest.extent_size = image->identity.extent_size;
  manifest.max_extents = image->identity.max_extents;
  manifest.extent_count = image->extent_count;
  manifest.epoch = image->identity.epoch;
  manifest.live_instances = image->live_instances;
  const std::string meta = RenderChannelMeta(image->meta);
  {
    Sha256 hash;
    if (!SendFile(*writer, std::string(kSnapshotMetaFile),
                  reinterpret_cast<const uint8_t*>(meta.data()), meta.size(), hash)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "snapshot: the client went away");
    }
    manifest.files.push_back({std::string(kSnapshotMetaFile), meta.size(), hash.HexDigest()});
  }
  for (ChannelImage::File& f : image->files) {
    Sha256 hash;
    if (!SendFile(*writer, f.name, f.bytes.get(), f.size, hash)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "snapshot: the client went away");
    }
    manifest.files.push_back({f.name, f.size, hash.HexDigest()});
    f.bytes.reset();  // sent: give the memory back now
  }
  const std::string text = RenderSnapshotManifest(manifest);
  v1::SnapshotChunk last;
  last.set_file(std::string(kSnapshotManifestFile));
  last.set_file_size(text.size());
  last.set_data(text);
  if (!writer->Write(last)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "snapshot: the client went away");
  }
  spdlog::info("snapshot of channel '{}' taken by {}: {} extents, {} live instances, {} "
               "bytes and string fields copied torn-free",
               manifest.channel_name, Caller(*context), manifest.extent_count,
               manifest.live_instances, image->composite_fields);
  return grpc::Status::OK;
}

grpc::Status AdminService::RestoreChannel(grpc::ServerContext* context,
                                          grpc::ServerReader<v1::RestoreChannelRequest>* reader,
                                          v1::RestoreChannelResponse* response) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  v1::RestoreChannelRequest in;
  if (!reader->Read(&in) || in.manifest().empty()) {
    return ToGrpc(absl::InvalidArgumentError(
        "restore: the first message must carry the snapshot's manifest.toml"));
  }
  absl::StatusOr<std::unique_ptr<ChannelRestore>> restore =
      core_->BeginRestore(peers_->Lookup(context->peer()), in.manifest(), in.name());
  if (!restore.ok()) return ToGrpc(restore.status());
  while (reader->Read(&in)) {
    if (!in.manifest().empty()) {
      return ToGrpc(absl::InvalidArgumentError("restore: a second manifest (send one per call)"));
    }
    const v1::SnapshotChunk& c = in.chunk();
    if (absl::Status s = (*restore)->Write(c.file(), c.offset(), c.data()); !s.ok()) {
      return ToGrpc(s);
    }
  }
  if (context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "restore: cancelled; nothing was restored");
  }
  const std::string who = Caller(*context);
  absl::StatusOr<RestoredChannel> done = core_->FinishRestore(std::move(*restore));
  if (!done.ok()) return ToGrpc(done.status());
  spdlog::warn("admin write by {}: channel '{}' restored from a snapshot", who, done->name);
  response->set_channel_id(done->id);
  response->set_name(done->name);
  response->set_types(done->types);
  response->set_roots(done->roots);
  response->set_live_instances(done->live_instances);
  response->set_refcounts_fixed(done->repaired.refcounts_fixed);
  response->set_dangling_dropped(done->repaired.dangling_dropped);
  response->set_unreferenced_freed(done->repaired.leaked_freed);
  response->set_mutexes_owner_died(done->mutexes_owner_died);
  return grpc::Status::OK;
}

}  // namespace structd::server
