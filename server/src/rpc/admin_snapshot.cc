// Admin: channel snapshots streamed out and restored (doc/snapshots.md).
// The channel copies itself (Channel::CaptureImage) and the core adopts a
// restore (Core::BeginRestore/FinishRestore); this file moves the bytes.

#include "absl/strings/str_cat.h"
#include "core/channel_restore.h"
#include "core/snapshot_emit.h"
#include "rpc/services.h"
#include "spdlog/spdlog.h"
#include "structd/base/posix.h"

namespace structd::server {

grpc::Status AdminService::SnapshotChannel(grpc::ServerContext* context,
                                           const v1::SnapshotChannelRequest* request,
                                           grpc::ServerWriter<v1::SnapshotChunk>* writer) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  absl::StatusOr<std::shared_ptr<Channel>> ch = core_->Find(request->channel());
  if (!ch.ok()) return ToGrpc(ch.status());
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<ChannelImage> image = (*ch)->CaptureImage();
  if (!image.ok()) return ToGrpc(image.status());
  const auto copied = std::chrono::steady_clock::now();
  v1::SnapshotChunk chunk;
  absl::StatusOr<SnapshotManifest> manifest =
      EmitSnapshot(*image, info_.version, [&](const SnapshotPiece& piece) {
        chunk.set_file(piece.file);
        chunk.set_file_size(piece.file_size);
        chunk.set_offset(piece.offset);
        chunk.set_data(piece.data.data(), piece.data.size());
        if (writer->Write(chunk)) return absl::OkStatus();
        return absl::CancelledError("snapshot: the client went away");
      });
  if (!manifest.ok()) return ToGrpc(manifest.status());
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  spdlog::info("snapshot of channel '{}' taken by {}: {} extents, {} live instances, {} "
               "bytes and string fields copied torn-free; copied in {} ms (the channel's "
               "lock held), sent in {} ms",
               manifest->channel_name, Caller(*context), manifest->extent_count,
               manifest->live_instances, image->composite_fields, ms(copied - start),
               ms(std::chrono::steady_clock::now() - copied));
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
