#ifndef STRUCTD_SERVER_CORE_STORAGE_QUOTA_H_
#define STRUCTD_SERVER_CORE_STORAGE_QUOTA_H_

// What the daemon's memory may hold, and who holds it: arena bytes per
// channel, per uid and in total, and channels per uid. A channel's bytes
// are its extents (each fully backed when created) and count against the
// uid that created it until the channel's files are gone. One session can
// then fill neither the file system under the state directory nor another
// user's share of it (doc/security.md).
//
// Thread safety: every method may be called concurrently (an internal
// lock, never held while calling out).

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "structd/base/mutex.h"

namespace structd::server {

struct QuotaLimits {
  uint64_t max_bytes_per_channel = 4ull << 30;
  uint64_t max_bytes_per_uid = 16ull << 30;
  // 0: half of the file system that holds the state directory, measured
  // when the daemon starts (Core::Open).
  uint64_t max_bytes_total = 0;
  uint32_t max_channels_per_uid = 64;
  // Arena files of channels whose arenas are sealed memfds (a header plus
  // one per extent): the daemon holds a descriptor of each, and systemd's
  // descriptor store one more (FileDescriptorStoreMax=). Files in the
  // state directory cost no descriptor and are not counted.
  uint32_t max_arena_files = 16384;
  uint32_t max_arena_files_per_uid = 4096;
};

// One quota and how much of it is used.
struct QuotaUse {
  std::string quota;  // the config option: "max_bytes_per_uid", ...
  bool per_uid = false;
  uid_t uid = 0;      // per_uid only
  uint64_t used = 0;
  uint64_t limit = 0;
};

class StorageQuota {
 public:
  explicit StorageQuota(QuotaLimits limits) : limits_(limits) {}

  const QuotaLimits& limits() const { return limits_; }

  // A new channel of `uid` with its first `bytes`. ResourceExhausted
  // naming the quota it would pass, and how to get room.
  // `files`: its arena files counted against max_arena_files (0 for a
  // channel whose arena files cost no descriptor); each Grow of such a
  // channel adds one.
  absl::Status AddChannel(const std::string& id, const std::string& name, uid_t uid,
                          uint64_t bytes, uint32_t files = 0);
  // A channel that exists already (a restart): counted, even past a
  // limit lowered since it grew.
  void AdoptChannel(const std::string& id, const std::string& name, uid_t uid, uint64_t bytes,
                    uint32_t files = 0);
  // `bytes` more for channel `id` (one extent), or ResourceExhausted.
  absl::Status Grow(const std::string& id, uint64_t bytes);
  // Returns a Grow whose extent could not be made.
  void CancelGrow(const std::string& id, uint64_t bytes);
  // The channel's files are gone: everything it held is free again.
  void RemoveChannel(const std::string& id);

  // Every limit with its use: the totals, then each uid that holds
  // something.
  std::vector<QuotaUse> Uses() const;

 private:
  struct ChannelUse {
    std::string name;
    uid_t uid = 0;
    uint64_t bytes = 0;
    uint32_t files = 0;  // 0: its files are not counted
  };
  struct UidUse {
    uint64_t bytes = 0;
    uint32_t channels = 0;
    uint32_t files = 0;
  };
  // OK if `bytes` and `files` more fit channel `c` (null: a new channel)
  // of `uid`.
  absl::Status CheckLocked(const ChannelUse* c, const std::string& name, uid_t uid,
                           uint64_t bytes, uint32_t files) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds (or with `sign` -1 removes) a use.
  void ChargeLocked(ChannelUse& c, int sign, uint64_t bytes, uint32_t files)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const QuotaLimits limits_;
  mutable base::Mutex mu_;
  std::map<std::string, ChannelUse> channels_ ABSL_GUARDED_BY(mu_);
  std::map<uid_t, UidUse> uids_ ABSL_GUARDED_BY(mu_);
  uint64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t total_files_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_STORAGE_QUOTA_H_
