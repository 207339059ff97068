#include "core/storage_quota.h"

#include "absl/strings/str_format.h"

namespace structd::server {

absl::Status StorageQuota::CheckLocked(const ChannelUse* c, const std::string& name, uid_t uid,
                                       uint64_t bytes, uint32_t files) const {
  uint64_t channel_bytes = c != nullptr ? c->bytes : 0;
  if (channel_bytes + bytes > limits_.max_bytes_per_channel) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': quota max_bytes_per_channel: the arena holds %d bytes, and %d more "
        "would pass the limit of %d (free instances you no longer need, or ask the operator "
        "to raise max_bytes_per_channel)",
        name, channel_bytes, bytes, limits_.max_bytes_per_channel));
  }
  auto u = uids_.find(uid);
  UidUse use = u != uids_.end() ? u->second : UidUse{};
  if (c == nullptr && use.channels >= limits_.max_channels_per_uid) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': quota max_channels_per_uid: uid %d already created %d channels, the "
        "most one uid may have (drop channels you no longer need, or ask the operator to raise "
        "max_channels_per_uid)",
        name, uid, use.channels));
  }
  if (use.bytes + bytes > limits_.max_bytes_per_uid) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': quota max_bytes_per_uid: the channels uid %d created hold %d bytes, and "
        "%d more would pass the limit of %d (drop channels you no longer need, or ask the "
        "operator to raise max_bytes_per_uid)",
        name, uid, use.bytes, bytes, limits_.max_bytes_per_uid));
  }
  if (total_ + bytes > limits_.max_bytes_total) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': quota max_bytes_total: the daemon's arenas hold %d bytes, and %d more "
        "would pass the limit of %d (drop channels, or ask the operator to raise "
        "max_bytes_total or give the state directory a larger file system)",
        name, total_, bytes, limits_.max_bytes_total));
  }
  if (files > 0 && uint64_t{use.files} + files > limits_.max_arena_files_per_uid) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': quota max_arena_files_per_uid: the sealed arenas of uid %d have %d "
        "files (a header and one per extent), and %d more would pass the limit of %d (use "
        "larger extents, drop channels, or ask the operator to raise max_arena_files_per_uid)",
        name, uid, use.files, files, limits_.max_arena_files_per_uid));
  }
  if (files > 0 && uint64_t{total_files_} + files > limits_.max_arena_files) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': quota max_arena_files: the daemon's sealed arenas have %d files, and %d "
        "more would pass the limit of %d (drop channels, or ask the operator to raise "
        "max_arena_files together with the unit's FileDescriptorStoreMax=)",
        name, total_files_, files, limits_.max_arena_files));
  }
  return absl::OkStatus();
}

void StorageQuota::ChargeLocked(ChannelUse& c, int sign, uint64_t bytes, uint32_t files) {
  UidUse& u = uids_[c.uid];
  if (sign > 0) {
    c.bytes += bytes;
    c.files += files;
    u.bytes += bytes;
    u.files += files;
    total_ += bytes;
    total_files_ += files;
  } else {
    c.bytes -= bytes;
    c.files -= files;
    u.bytes -= bytes;
    u.files -= files;
    total_ -= bytes;
    total_files_ -= files;
  }
}

absl::Status StorageQuota::AddChannel(const std::string& id, const std::string& name, uid_t uid,
                                      uint64_t bytes, uint32_t files) {
  base::MutexLock lock(&mu_);
  if (absl::Status s = CheckLocked(nullptr, name, uid, bytes, files); !s.ok()) return s;
  ChannelUse& c = channels_[id] = ChannelUse{name, uid, 0, 0};
  uids_[uid].channels += 1;
  ChargeLocked(c, +1, bytes, files);
  return absl::OkStatus();
}

void StorageQuota::AdoptChannel(const std::string& id, const std::string& name, uid_t uid,
                                uint64_t bytes, uint32_t files) {
  base::MutexLock lock(&mu_);
  if (channels_.count(id)) return;
  ChannelUse& c = channels_[id] = ChannelUse{name, uid, 0, 0};
  uids_[uid].channels += 1;
  ChargeLocked(c, +1, bytes, files);
}

absl::Status StorageQuota::Grow(const std::string& id, uint64_t bytes) {
  base::MutexLock lock(&mu_);
  auto c = channels_.find(id);
  if (c == channels_.end()) {
    return absl::NotFoundError(absl::StrFormat("channel %s: not counted (dropped?)", id));
  }
  const uint32_t files = c->second.files > 0 ? 1 : 0;  // one more extent file
  if (absl::Status s = CheckLocked(&c->second, c->second.name, c->second.uid, bytes, files);
      !s.ok()) {
    return s;
  }
  ChargeLocked(c->second, +1, bytes, files);
  return absl::OkStatus();
}

void StorageQuota::CancelGrow(const std::string& id, uint64_t bytes) {
  base::MutexLock lock(&mu_);
  auto c = channels_.find(id);
  if (c == channels_.end() || c->second.bytes < bytes) return;
  ChargeLocked(c->second, -1, bytes, c->second.files > 1 ? 1 : 0);
}

void StorageQuota::RemoveChannel(const std::string& id) {
  base::MutexLock lock(&mu_);
  auto c = channels_.find(id);
  if (c == channels_.end()) return;
  const uid_t uid = c->second.uid;
  ChargeLocked(c->second, -1, c->second.bytes, c->second.files);
  UidUse& u = uids_[uid];
  u.channels -= 1;
  if (u.channels == 0) uids_.erase(uid);
  channels_.erase(c);
}

std::vector<QuotaUse> StorageQuota::Uses() const {
  base::MutexLock lock(&mu_);
  std::vector<QuotaUse> out;
  out.push_back({"max_bytes_total", false, 0, total_, limits_.max_bytes_total});
  out.push_back({"max_arena_files", false, 0, total_files_, limits_.max_arena_files});
  uint64_t largest = 0;
  for (const auto& [id, c] : channels_) largest = std::max(largest, c.bytes);
  out.push_back({"max_bytes_per_channel", false, 0, largest, limits_.max_bytes_per_channel});
  for (const auto& [uid, u] : uids_) {
    out.push_back({"max_bytes_per_uid", true, uid, u.bytes, limits_.max_bytes_per_uid});
    out.push_back({"max_channels_per_uid", true, uid, u.channels, limits_.max_channels_per_uid});
    if (u.files > 0) {
      out.push_back(
          {"max_arena_files_per_uid", true, uid, u.files, limits_.max_arena_files_per_uid});
    }
  }
  return out;
}

}  // namespace structd::server
