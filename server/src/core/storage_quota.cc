#include "core/storage_quota.h"

#include "absl/strings/str_format.h"

namespace structd::server {

absl::Status StorageQuota::CheckLocked(const ChannelUse* c, const std::string& name, uid_t uid,
                                       uint64_t bytes) const {
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
  return absl::OkStatus();
}

absl::Status StorageQuota::AddChannel(const std::string& id, const std::string& name, uid_t uid,
                                      uint64_t bytes) {
  base::MutexLock lock(&mu_);
  if (absl::Status s = CheckLocked(nullptr, name, uid, bytes); !s.ok()) return s;
  channels_[id] = ChannelUse{name, uid, bytes};
  uids_[uid].bytes += bytes;
  uids_[uid].channels += 1;
  total_ += bytes;
  return absl::OkStatus();
}

void StorageQuota::AdoptChannel(const std::string& id, const std::string& name, uid_t uid,
                                uint64_t bytes) {
  base::MutexLock lock(&mu_);
  if (channels_.count(id)) return;
  channels_[id] = ChannelUse{name, uid, bytes};
  uids_[uid].bytes += bytes;
  uids_[uid].channels += 1;
  total_ += bytes;
}

absl::Status StorageQuota::Grow(const std::string& id, uint64_t bytes) {
  base::MutexLock lock(&mu_);
  auto c = channels_.find(id);
  if (c == channels_.end()) {
    return absl::NotFoundError(absl::StrFormat("channel %s: not counted (dropped?)", id));
  }
  if (absl::Status s = CheckLocked(&c->second, c->second.name, c->second.uid, bytes); !s.ok()) {
    return s;
  }
  c->second.bytes += bytes;
  uids_[c->second.uid].bytes += bytes;
  total_ += bytes;
  return absl::OkStatus();
}

void StorageQuota::CancelGrow(const std::string& id, uint64_t bytes) {
  base::MutexLock lock(&mu_);
  auto c = channels_.find(id);
  if (c == channels_.end() || c->second.bytes < bytes) return;
  c->second.bytes -= bytes;
  uids_[c->second.uid].bytes -= bytes;
  total_ -= bytes;
}

void StorageQuota::RemoveChannel(const std::string& id) {
  base::MutexLock lock(&mu_);
  auto c = channels_.find(id);
  if (c == channels_.end()) return;
  UidUse& u = uids_[c->second.uid];
  u.bytes -= c->second.bytes;
  u.channels -= 1;
  if (u.channels == 0) uids_.erase(c->second.uid);
  total_ -= c->second.bytes;
  channels_.erase(c);
}

std::vector<QuotaUse> StorageQuota::Uses() const {
  base::MutexLock lock(&mu_);
  std::vector<QuotaUse> out;
  out.push_back({"max_bytes_total", false, 0, total_, limits_.max_bytes_total});
  uint64_t largest = 0;
  for (const auto& [id, c] : channels_) largest = std::max(largest, c.bytes);
  out.push_back({"max_bytes_per_channel", false, 0, largest, limits_.max_bytes_per_channel});
  for (const auto& [uid, u] : uids_) {
    out.push_back({"max_bytes_per_uid", true, uid, u.bytes, limits_.max_bytes_per_uid});
    out.push_back({"max_channels_per_uid", true, uid, u.channels, limits_.max_channels_per_uid});
  }
  return out;
}

}  // namespace structd::server
