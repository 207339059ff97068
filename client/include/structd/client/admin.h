#ifndef STRUCTD_CLIENT_ADMIN_H_
#define STRUCTD_CLIENT_ADMIN_H_

// The Admin service for operators' tools (structctl): read-only views of a
// running daemon. No session is needed; the daemon admits the daemon's own
// uid, root, or a caller presenting the admin capability (the daemon writes
// it to STATE/admin.capability, 0600). Field meanings and units are those
// of proto/structd/v1/admin.proto.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "structd/client/channel.h"
#include "structd/shm/inspection.h"
#include "structd/shm/ref.h"
#include "structd/shm/type_token.h"

namespace structd::client {

namespace internal {
class AdminConnection;
}

struct AdminOptions {
  std::string socket;            // "" = $STRUCTD_SOCKET, else the default
  // Admin calls need root or the admin capability. "": taken from
  // $STRUCTD_ADMIN_CAPABILITY, else read from admin_capability_file.
  std::string admin_capability;
  // "" = the daemon's default: STATE/admin.capability beside the socket
  // (SOCKETDIR/state/admin.capability), readable by the daemon's user.
  std::string admin_capability_file;
  // As ClientOptions::daemon_uid: the uid the daemon must run as.
  std::optional<uid_t> daemon_uid;
  std::chrono::milliseconds call_timeout{10000};
  std::chrono::milliseconds connect_timeout{2000};
};

struct DaemonStatus {
  std::string version;
  uint64_t uptime_ms = 0;
  uint64_t daemon_instance = 0;  // random per daemon start
  std::string socket;
  std::string state_dir;
  uint32_t pid = 0;
  uint32_t channels = 0;
  uint32_t sessions = 0;
  uint64_t live_instances = 0;
  uint64_t arena_bytes = 0;
  // Channel directories the daemon could not adopt at start-up (kept
  // untouched, names reserved).
  struct Unrecovered {
    std::string dir;
    std::string name;
    std::string reason;
  };
  std::vector<Unrecovered> unrecovered;
  // Every quota of the daemon's config with its use (admin.proto QuotaUse).
  struct Quota {
    std::string quota;  // the config option, e.g. "max_bytes_per_uid"
    bool per_uid = false;
    uint32_t uid = 0;
    uint64_t used = 0;
    uint64_t limit = 0;
  };
  std::vector<Quota> quotas;
};

struct ChannelSummary {
  std::string id;
  std::string name;
  uint32_t types = 0;
  uint32_t roots = 0;
  uint32_t sessions = 0;
  uint64_t live_instances = 0;
  uint64_t arena_bytes = 0;
  bool sealed = false;
  bool dropped = false;
  uint64_t epoch = 0;
  std::string damage;  // non-empty: the channel fails with DATA_LOSS
};

struct SessionSummary {
  std::string id;
  std::string client_name;
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint64_t attached_unix_ms = 0;
  uint64_t refs_held = 0;
  std::vector<std::string> channels;
};

// What an arena holds, as the daemon's admin calls describe it
// (structd/shm/inspection.h: one definition for the daemon and clients).
using shm::ArenaProblem;
using shm::DecodedField;
using shm::DecodedInstance;
using shm::InstanceListing;
using shm::InstanceSummary;
using shm::TypeCount;

struct MemoryReport {
  uint32_t extents = 0;
  uint64_t extent_size = 0;
  uint64_t arena_bytes = 0;
  uint64_t live_bytes = 0;
  uint64_t free_block_bytes = 0;
  uint64_t class_slabs = 0;
  uint64_t large_slabs = 0;
  uint64_t unassigned_slabs = 0;
  double fragmentation = 0;
};

struct ArenaCheck {
  bool ok = false;
  uint64_t instances_checked = 0;
  std::vector<ArenaProblem> problems;
};

enum class Health { kServing, kNotServing, kUnknown };

class AdminClient {
 public:
  // UNAVAILABLE ("no structd at PATH: ...") if nothing answers.
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(AdminOptions options = {});
  ~AdminClient();

  const std::string& socket() const;
  absl::StatusOr<Health> CheckHealth();
  absl::StatusOr<DaemonStatus> Status();
  absl::StatusOr<std::vector<ChannelSummary>> Channels();
  absl::StatusOr<std::vector<SessionSummary>> Sessions();
  absl::StatusOr<std::vector<TypeInfo>> Types(const std::string& channel, bool* sealed = nullptr);
  // `token` zero: every type. `limit`: refs to list (0: counts only).
  absl::StatusOr<InstanceListing> Instances(const std::string& channel, shm::TypeToken token,
                                            uint32_t limit);
  absl::StatusOr<DecodedInstance> Inspect(const std::string& channel, Ref ref, uint32_t depth);
  absl::StatusOr<std::vector<RootInfo>> Roots(const std::string& channel);
  absl::StatusOr<std::vector<PortInfo>> Ports(const std::string& channel);
  absl::StatusOr<MemoryReport> Memory(const std::string& channel);
  absl::StatusOr<ArenaCheck> Check(const std::string& channel);
  // Drops a channel without its owner capability; returns the sessions
  // still joined (the arena goes when they leave).
  absl::StatusOr<uint32_t> Drop(const std::string& channel);
  // The daemon's metrics in the Prometheus text exposition format, and
  // where its HTTP endpoint listens ("" if it serves none).
  struct Metrics {
    std::string text;
    std::string listen;
  };
  absl::StatusOr<Metrics> GetMetrics();

  // Snapshots (admin.proto SnapshotChannel / RestoreChannel, the files in
  // doc/snapshots.md). Neither has a deadline: they take as long as the
  // arena's bytes take to move.
  struct SnapshotChunk {
    std::string file;        // "meta.toml", "arena", "extent.N", "manifest.toml"
    uint64_t file_size = 0;  // the whole file's size
    uint64_t offset = 0;
    std::string data;        // ranges never sent are zeros
  };
  // Streams a snapshot of `channel` into `sink`, chunk by chunk, in the
  // daemon's order (manifest.toml last). An error from `sink` cancels the
  // call and is returned.
  absl::Status Snapshot(const std::string& channel,
                        const std::function<absl::Status(const SnapshotChunk&)>& sink);
  struct RestoreReport {
    std::string channel_id;
    std::string name;
    uint32_t types = 0;
    uint32_t roots = 0;
    uint64_t live_instances = 0;
    uint64_t refcounts_fixed = 0;
    uint64_t dangling_dropped = 0;
    uint64_t unreferenced_freed = 0;
    uint32_t mutexes_owner_died = 0;
  };
  // Restores a snapshot as channel `name` ("" = the snapshot's name):
  // sends `manifest`, then every chunk `source` fills in until it returns
  // false. An error from `source` cancels the call (nothing is restored)
  // and is returned.
  absl::StatusOr<RestoreReport> Restore(
      const std::string& manifest, const std::string& name,
      const std::function<absl::StatusOr<bool>(SnapshotChunk&)>& source);

  // Writes by hand (admin.proto SetField, SetRoot, DeleteRoot); the
  // daemon logs each with the caller.
  struct FieldSet {
    std::string key;
    std::string type;
    std::string previous;
    std::string value;
  };
  absl::StatusOr<FieldSet> SetField(const std::string& channel, Ref ref, const std::string& field,
                                    const std::string& value);
  // Returns the root's previous ref (null if it is new).
  absl::StatusOr<Ref> SetRoot(const std::string& channel, const std::string& name, Ref ref);
  absl::Status DeleteRoot(const std::string& channel, const std::string& name);

 private:
  explicit AdminClient(std::unique_ptr<internal::AdminConnection> connection);
  std::unique_ptr<internal::AdminConnection> connection_;
};

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_ADMIN_H_
