// Core: restoring a channel from a snapshot. The snapshot side is
// Channel::CaptureImage; the files' format is core/snapshot_format.h.
// doc/snapshots.md.

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/channel_restore.h"
#include "core/core.h"
#include "core/descriptor_store.h"
#include "core/private_dir.h"
#include "spdlog/spdlog.h"

namespace structd::server {
namespace {

// SHA-256 of the first `bytes` of `fd`, read with pread.
absl::StatusOr<std::string> HashFile(int fd, uint64_t bytes, const std::string& label) {
  Sha256 hash;
  std::unique_ptr<char[]> buffer(new char[1 << 20]);
  for (uint64_t at = 0; at < bytes;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(bytes - at, 1 << 20));
    ssize_t n = pread(fd, buffer.get(), want, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(absl::StrCat("restore: reading back ", label, ": ",
                                              n < 0 ? std::strerror(errno) : "short file"));
    }
    hash.Update(buffer.get(), static_cast<size_t>(n));
    at += static_cast<uint64_t>(n);
  }
  return hash.HexDigest();
}

absl::Status ChecksumMismatch(const std::string& file) {
  return absl::DataLossError(absl::StrCat(
      "snapshot file ", file, ": its SHA-256 does not match the manifest (the file is damaged, "
      "truncated or from another snapshot; nothing was restored: use an intact copy, or take "
      "a new snapshot)"));
}

}  // namespace

ChannelRestore::~ChannelRestore() {
  if (finished_) return;
  prepared_.clear();  // unnamed files vanish with their descriptors
  if (storage_ != nullptr) storage_->RemoveAll();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  if (release_) release_();
}

absl::Status ChannelRestore::Write(const std::string& file, uint64_t offset,
                                   std::string_view data) {
  const SnapshotFileEntry* entry = manifest_.Find(file);
  if (entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "restore: file '", file, "' is not in the snapshot's manifest (send only the files it "
        "names)"));
  }
  if (offset > entry->bytes || data.size() > entry->bytes - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "restore: %d bytes at offset %d of '%s' run past its %d bytes", data.size(), offset,
        file, entry->bytes));
  }
  if (file == kSnapshotMetaFile) {
    meta_text_.resize(entry->bytes);
    std::memcpy(meta_text_.data() + offset, data.data(), data.size());
    return absl::OkStatus();
  }
  int fd = prepared_.at(file).fd.get();
  while (!data.empty()) {
    ssize_t n = pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "restore: writing '", file, "': ", n < 0 ? std::strerror(errno) : "no progress",
          " (the memory behind the daemon's state directory is short)"));
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ChannelRestore>> Core::BeginRestore(
    const PeerCredentials& peer, std::string_view manifest_text, const std::string& wanted_name) {
  absl::StatusOr<SnapshotManifest> manifest = ParseSnapshotManifest(manifest_text);
  if (!manifest.ok()) return manifest.status();
  const std::string name = wanted_name.empty() ? manifest->channel_name : wanted_name;
  if (absl::Status s = ValidateChannelName(name); !s.ok()) return s;
  if (manifest->extent_size > options_.arena.extent_size ||
      manifest->max_extents > options_.arena.max_extents) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "restore: the snapshot's arena has up to %d extents of %d bytes; this daemon allows "
        "at most %d extents of %d bytes (raise extent_size / max_extents in its config)",
        manifest->max_extents, manifest->extent_size, options_.arena.max_extents,
        options_.arena.extent_size));
  }
  shm::ArenaOptions geometry;
  geometry.extent_size = manifest->extent_size;
  geometry.max_extents = manifest->max_extents;
  geometry.initial_extents = 1;
  if (absl::Status s = shm::ValidateArenaOptions(geometry); !s.ok()) {
    return absl::DataLossError(absl::StrCat("snapshot manifest.toml: ", s.message()));
  }
  std::unique_ptr<ChannelRestore> r(new ChannelRestore());
  r->manifest_ = std::move(*manifest);
  r->name_ = name;
  r->uid_ = peer.uid;
  {
    base::MutexLock lock(&mu_);
    // Reserved until finished or abandoned.
    absl::StatusOr<std::string> id = ReserveChannelNameLocked(
        name, "restore under another name with --name NEW, or drop that channel first",
        "restore under another name with --name NEW");
    if (!id.ok()) return id.status();
    r->id_ = *id;
  }
  const bool memfd = options_.arena_memfd;
  const uint32_t extents = r->manifest_.extent_count;
  absl::Status charged =
      quota_.AddChannel(r->id_, name, peer.uid, r->manifest_.extent_size * extents,
                        memfd ? 1 + extents : 0);
  const std::string id = r->id_;
  r->release_ = [this, id, name, charged = charged.ok()] {
    if (charged) quota_.RemoveChannel(id);
    base::MutexLock lock(&mu_);
    auto it = channel_ids_by_name_.find(name);
    if (it != channel_ids_by_name_.end() && it->second == id) channel_ids_by_name_.erase(it);
  };
  if (!charged.ok()) return charged;
  r->dir_ = absl::StrCat(options_.state_dir, "/channels/", r->id_);
  std::vector<std::string> dirs = {r->dir_, r->dir_ + "/ledgers"};
  if (!memfd) dirs.push_back(r->dir_ + "/arena");
  for (const std::string& d : dirs) {
    if (absl::Status s = MakePrivateDir(d); !s.ok()) return absl::InternalError(s.message());
  }
  if (memfd) {
    r->storage_ = std::make_unique<shm::SealedMemoryStorage>(
        r->id_, ChannelArenaNames(r->id_).KeeperFor(options_.descriptor_store));
  } else {
    r->storage_ = shm::DirectoryStorage(r->dir_ + "/arena", options_.arena.file_mode);
  }
  for (const SnapshotFileEntry& f : r->manifest_.files) {
    if (f.name == kSnapshotMetaFile) continue;
    shm::ArenaFile file;
    if (f.name != shm::kArenaHeaderFile) file.extent = std::stoi(f.name.substr(7));
    absl::StatusOr<shm::PreparedFile> prepared = r->storage_->Prepare(file, f.bytes);
    if (!prepared.ok()) return prepared.status();
    r->prepared_.emplace(f.name, std::move(*prepared));
  }
  spdlog::info("restore of channel '{}' (snapshot of '{}', {} extents of {} bytes) started",
               name, r->manifest_.channel_name, extents, r->manifest_.extent_size);
  return r;
}

absl::StatusOr<RestoredChannel> Core::FinishRestore(std::unique_ptr<ChannelRestore> r) {
  const SnapshotFileEntry* meta_entry = r->manifest_.Find(kSnapshotMetaFile);
  r->meta_text_.resize(meta_entry->bytes);
  if (Sha256Hex(r->meta_text_) != meta_entry->sha256) {
    return ChecksumMismatch(std::string(kSnapshotMetaFile));
  }
  for (const auto& [file, prepared] : r->prepared_) {
    absl::StatusOr<std::string> hash =
        HashFile(prepared.fd.get(), r->manifest_.Find(file)->bytes, file);
    if (!hash.ok()) return hash.status();
    if (*hash != r->manifest_.Find(file)->sha256) return ChecksumMismatch(file);
  }
  absl::StatusOr<ChannelMeta> meta =
      ParseChannelMeta(r->meta_text_, "snapshot meta.toml");
  if (!meta.ok()) return meta.status();
  if (meta->arena.epoch != 0 && (meta->arena.epoch != r->manifest_.epoch ||
                                 meta->arena.extent_size != r->manifest_.extent_size)) {
    return absl::DataLossError(
        "snapshot: meta.toml and manifest.toml describe different arenas (files of two "
        "snapshots mixed); nothing was restored");
  }
  meta->id = r->id_;
  meta->name = r->name_;
  meta->dropped = false;
  meta->creator_uid = r->uid_;
  meta->arena_memfd = options_.arena_memfd;
  meta->arena = {r->manifest_.epoch, r->manifest_.extent_size, r->manifest_.max_extents};
  // Extents first: the header's count is recounted from the files anyway.
  for (auto& [file, prepared] : r->prepared_) {
    shm::ArenaFile f;
    if (file != shm::kArenaHeaderFile) f.extent = std::stoi(file.substr(7));
    if (absl::Status s = r->storage_->Publish(f, prepared); !s.ok()) return s;
  }
  r->prepared_.clear();
  // meta.toml last: from here a restart adopts the channel.
  absl::StatusOr<std::unique_ptr<MetaStore>> store = MetaStore::Create(r->dir_, *meta);
  if (!store.ok()) return store.status();
  store->reset();
  // The storage's descriptors now live in the channel (sealed memory: in
  // the descriptor store, where Channel::Restore takes them).
  std::unique_ptr<shm::ArenaStorage> storage = std::move(r->storage_);
  absl::StatusOr<std::unique_ptr<Channel>> adopted =
      Channel::Restore(r->dir_, options_.limits, options_.descriptor_store);
  if (!adopted.ok()) {
    storage->RemoveAll();
    return adopted.status();
  }
  storage.reset();
  std::shared_ptr<Channel> channel = std::move(*adopted);
  RestoredChannel out;
  out.mutexes_owner_died = channel->ForgetProcesses();
  out.repaired = channel->Reconcile();
  out.file_repairs = channel->restore_repairs();
  ChannelStats stats = channel->Stats();
  out.id = channel->id();
  out.name = channel->name();
  out.types = stats.types;
  out.roots = stats.roots;
  out.live_instances = stats.alloc.live_instances;
  ChargeQuota(channel);
  {
    base::MutexLock lock(&mu_);
    channels_by_id_[channel->id()] = channel;
  }
  r->finished_ = true;
  spdlog::info(
      "channel '{}' restored from a snapshot of '{}' taken at {} ms (id {}): {} types, {} "
      "roots, {} live instances; repaired {} refcounts, dropped {} dangling references, "
      "freed {} instances only sessions held, left {} held mutexes owner-died",
      out.name, r->manifest_.channel_name, r->manifest_.taken_unix_ms, out.id, out.types,
      out.roots, out.live_instances, out.repaired.refcounts_fixed, out.repaired.dangling_dropped,
      out.repaired.leaked_freed, out.mutexes_owner_died);
  return out;
}

}  // namespace structd::server
