#ifndef STRUCTD_SERVER_CORE_CORE_H_
#define STRUCTD_SERVER_CORE_CORE_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "structd/base/mutex.h"
#include "absl/status/statusor.h"
#include "core/channel.h"
#include "core/process_handle.h"
#include "core/secret_digest.h"
#include "core/storage_quota.h"
#include "structd/shm/arena.h"
#include "structd/shm/layout.h"

namespace structd::server {

// True if `text` is valid UTF-8 with no control characters (C0, DEL, C1,
// line separators): safe to print into a log line or a terminal.
bool IsPrintableUtf8(std::string_view text);

// Who is calling, as the kernel says (SO_PEERCRED of the connection).
struct PeerCredentials {
  bool known = false;
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  // The calling process itself (a pidfd), when the kernel could give one:
  // liveness is decided by it, never by the pid alone.
  std::shared_ptr<const ProcessHandle> process;
  // The calling connection (its socket's inode); 0 if unknown. Binds a
  // session whose process cannot be bound (allow_unbound_peers).
  uint64_t connection = 0;
};

struct CoreOptions {
  std::string state_dir;                 // channels/ lives here
  shm::ArenaOptions arena;               // defaults for new channels
  Channel::Limits limits;                // what one channel may hold
  uint32_t max_channels = 256;
  uint32_t max_sessions = 4096;
  // One session per process is the model; a few allow libraries that
  // each connect. Bounds what one process or one uid can take.
  uint32_t max_sessions_per_process = 16;
  uint32_t max_sessions_per_uid = 1024;
  std::chrono::milliseconds lease{15000};  // heartbeat deadline
  uint32_t max_batch = 1000000;          // AllocateBatch count
  uint32_t max_refs_per_call = 100000;   // Retain/Release
  // A peer the kernel gives no pidfd for (its pid is invisible to the
  // daemon and the kernel predates SO_PEERPIDFD) is refused, because
  // nothing would tell its death or its identity. When allowed, such a
  // session is bound to the connection that attached instead.
  bool allow_unbound_peers = false;
  // Arena bytes per channel, per uid and in total; channels per uid. The
  // extent size and count in `arena` are bounds too: a client may ask for
  // smaller extents or fewer of them, never more.
  QuotaLimits quotas;
  // A channel no session has joined for this long is dropped (and its
  // memory freed); 0 keeps channels until they are dropped.
  std::chrono::milliseconds drop_idle_channels_after{0};
  // Where sealed arenas' memfds outlive the daemon (systemd's descriptor
  // store); null if the daemon runs without one. Channels created with a
  // sealed arena are restored only with it.
  std::shared_ptr<DescriptorStore> descriptor_store;
  // New channels get sealed memfds kept in descriptor_store instead of
  // files (the arena_backing option). REQUIRES: descriptor_store.
  bool arena_memfd = false;
};

struct SessionInfo {
  std::string id;
  std::string secret;
  std::string client_name;
  pid_t pid = 0;
  uid_t uid = 0;
  uint64_t attached_unix_ms = 0;
  std::vector<std::string> channels;  // names of joined channels
  uint64_t refs_held = 0;
};

struct ChannelCreated {
  std::string id;
  std::string owner_capability;
  std::string member_capability;
  ArenaSummary arena;
};

// A channel directory that Recover could not adopt. Its files are kept
// untouched and its name stays reserved, so restoring it later cannot
// make two channels with one name.
struct UnrecoveredChannel {
  std::string dir;
  std::string name;    // "" if even the name could not be read
  std::string reason;  // what is wrong and what to do
};

struct ChannelJoined {
  std::string id;
  std::string name;
  Role role = Role::kMember;
  ArenaSummary arena;
};

// A channel brought back from a snapshot (Core::FinishRestore).
struct RestoredChannel {
  std::string id;
  std::string name;
  uint32_t types = 0;
  uint32_t roots = 0;
  uint64_t live_instances = 0;
  // What the restore repaired, as recovery after a daemon kill does:
  // refcounts fixed to the references that exist (sessions' references
  // are not in a snapshot, so what only they held is freed), dangling
  // references dropped, and held mutexes left owner-died.
  Channel::RepairReport repaired;
  uint32_t mutexes_owner_died = 0;
  std::vector<std::string> file_repairs;
};

class ChannelRestore;

// What happened since the daemon started, counted as it happens (for
// metrics; never reset). Lock-free.
struct EventCounts {
  std::atomic<uint64_t> attaches{0};        // sessions attached, new or resumed
  std::atomic<uint64_t> session_ends{0};    // sessions ended, for any reason
  std::atomic<uint64_t> lease_expiries{0};  // ... because the lease expired
  // References the daemon released for sessions whose process had exited
  // (died, or exited without detaching) or that did not resume after a
  // restart.
  std::atomic<uint64_t> released_after_exit{0};
  // What recovery repaired at start-up: refcounts fixed, dangling
  // references dropped, leaked instances freed, file repairs.
  std::atomic<uint64_t> recovery_repairs{0};
};

// The domain core of the daemon: sessions, channels and who may do what.
// No gRPC in here; the rpc layer translates requests into these calls and
// statuses back.
//
// Thread safety: all methods may be called concurrently. Lock order: the
// core's mutex, then a channel's; the core's mutex is never held while a
// channel does arena work.
class Core {
 public:
  static absl::StatusOr<std::unique_ptr<Core>> Open(CoreOptions options);
  ~Core();

  const CoreOptions& options() const { return options_; }
  // Random per daemon start; clients use it to notice a restart.
  uint64_t instance_id() const { return instance_id_; }

  // Sessions. Attach requires known peer credentials.
  // With `resume_id`/`resume_secret` from an earlier `attached`, a session
  // that outlived a daemon restart is resumed (same id, its ledgers
  // handed back) if the same process asks; otherwise a new session starts.
  absl::StatusOr<SessionInfo> Attach(const PeerCredentials& peer,
                                     const std::string& client_name,
                                     const std::string& resume_id = "",
                                     const std::string& resume_secret = "");
  void Heartbeat(const std::string& session_id);
  // Channels found at start-up that could not be adopted.
  std::vector<UnrecoveredChannel> Unrecovered() const;

  // Who may call the Admin service: the daemon's own uid, root, or a
  // caller presenting the admin capability (a fresh one per start, in
  // STATE/admin.capability, readable by the daemon's uid only).
  // PermissionDenied saying how to get access otherwise.
  absl::Status AuthorizeAdmin(const PeerCredentials& peer,
                              std::string_view presented_capability) const;

  // Daemon-wide totals (Admin.GetStatus).
  struct Totals {
    uint32_t channels = 0;
    uint32_t sessions = 0;
    uint64_t live_instances = 0;
    uint64_t arena_bytes = 0;
  };
  Totals GetTotals() const;
  const EventCounts& events() const { return events_; }
  // Every quota with its use (structctl status).
  std::vector<QuotaUse> Quotas() const { return quota_.Uses(); }
  // Ends a session: leaves every joined channel, releasing every reference
  // in its ledgers. Returns how many references were released. Idempotent.
  uint64_t Detach(const std::string& session_id);
  // Sessions whose last heartbeat is older than the lease and whose
  // process is gone or cannot be observed (no pidfd). A live process's
  // session is never returned, however long it has been silent (stopped
  // by SIGSTOP or a debugger): its memory must not be recycled under it.
  std::vector<std::string> ExpiredSessions();
  // Checks the "structd-session" value of a call: the session exists and
  // (when the credentials are known) belongs to the calling process.
  absl::Status CheckSession(const std::string& session_id,
                            const PeerCredentials& peer) const;
  std::vector<SessionInfo> Sessions() const;
  // The memory socket's check (memory.proto): the session belongs to the
  // peer (CheckSession; an unbound session instead proves itself with its
  // secret, since the memory socket is another connection) and has joined
  // `channel`.
  absl::StatusOr<std::shared_ptr<Channel>> AuthorizeMemory(const std::string& session_id,
                                                           std::string_view secret,
                                                           const PeerCredentials& peer,
                                                           const std::string& channel) const;
  // Sessions recovered after a restart that have not resumed: those whose
  // process is gone, or whose lease ran out, have their ledgers released
  // now. Returns the references released.
  uint64_t ReapOrphans();
  // Frees blocks that ended sessions left claimed (Channel::ReapClaims),
  // once their processes have exited.
  uint64_t ReapClaims();
  size_t orphan_count() const;
  // Counts in events().released_after_exit what Detach released for
  // sessions whose process had not yet been seen to exit then, once it
  // has (within a few seconds; a process still alive then closed its
  // connection and lives on). The daemon calls it periodically.
  void CountExits();

  // Channels.
  absl::StatusOr<ChannelCreated> CreateChannel(const std::string& session_id,
                                               const std::string& name,
                                               uint64_t extent_size,
                                               uint32_t max_extents);
  absl::StatusOr<ChannelJoined> JoinChannel(const std::string& session_id,
                                            const std::string& channel,
                                            const std::string& capability);
  absl::Status DropChannel(const std::string& channel,
                           const std::string& owner_capability);
  // An operator's drop (Admin.DropChannel): no capability needed; the
  // caller checked AuthorizeAdmin. Returns the sessions still joined.
  absl::StatusOr<uint32_t> DropChannelAsAdmin(const std::string& channel);
  // Drops every channel unused for options().drop_idle_channels_after (if
  // set); returns how many. The daemon calls it periodically.
  size_t DropIdleChannels();
  // Channel::RestoreFileSizes over every channel; the daemon calls it
  // about once a second. Returns the files repaired.
  size_t RestoreFileSizes();
  // The channel `channel` (name or id) if `session_id` joined it:
  // NotFound for an unknown channel, FailedPrecondition if not joined.
  absl::StatusOr<std::shared_ptr<Channel>> Joined(
      const std::string& session_id, const std::string& channel) const;
  // Owner-only operations check the owner capability.
  absl::StatusOr<std::shared_ptr<Channel>> OwnedChannel(
      const std::string& channel, const std::string& owner_capability) const;
  // Any channel by name or id (admin).
  absl::StatusOr<std::shared_ptr<Channel>> Find(
      const std::string& channel) const;
  std::vector<std::shared_ptr<Channel>> Channels() const;

  // Snapshots (doc/snapshots.md). A restore starts from the snapshot's
  // manifest: it is checked (DataLoss if damaged, FailedPrecondition if
  // foreign), the name (`name`, or the snapshot's if empty) reserved
  // (AlreadyExists if a channel has it), the quota of `peer`'s uid
  // charged, and the arena files prepared. The caller then writes the
  // files' contents into it and finishes it; dropping it unfinished
  // undoes everything.
  absl::StatusOr<std::unique_ptr<ChannelRestore>> BeginRestore(const PeerCredentials& peer,
                                                               std::string_view manifest,
                                                               const std::string& name);
  // Checks every file's checksum (DataLoss naming the file), publishes the
  // files and adopts the channel as recovery adopts one after a restart
  // (the same repairs), then makes it joinable under its name with the
  // snapshot's capabilities.
  absl::StatusOr<RestoredChannel> FinishRestore(std::unique_ptr<ChannelRestore> restore);

 private:
  struct Session {
    SessionInfo info;
    std::set<std::string> joined;  // channel ids
    std::chrono::steady_clock::time_point last_heartbeat;
    std::shared_ptr<const ProcessHandle> process;  // null: unbound
    uint64_t connection = 0;  // binds an unbound session (allow_unbound_peers)
    SecretDigest secret;      // what the memory socket checks of an unbound one
    bool lease_warned = false;  // logged "silent but alive" once
  };

  // A session of a previous daemon run, waiting to be resumed.
  struct Orphan {
    pid_t pid = 0;
    uid_t uid = 0;
    SecretDigest secret;  // empty: can never resume
    std::string client_name;
    std::chrono::steady_clock::time_point deadline;
  };
  explicit Core(CoreOptions options);
  // Re-adopts every channel and session record in the state directory.
  void Recover();
  // What the descriptor store handed back that no channel took: kept for
  // a channel whose directory exists, forgotten otherwise.
  void ForgetStrayDescriptors();
  std::string SessionPath(const std::string& id) const;
  // A fresh admin capability in STATE/admin.capability (0600).
  void WriteAdminCapability();
  // Writes the record a resuming process needs; the secret only as a
  // digest.
  void SaveSession(const SessionInfo& info, const SecretDigest& secret) const;
  absl::StatusOr<std::shared_ptr<Channel>> FindLocked(
      const std::string& channel) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A dropped channel that no session is joined to any more, removed from
  // the directory; null otherwise. The caller destroys it outside mu_.
  std::shared_ptr<Channel> TakeIfUnusedLocked(const std::shared_ptr<Channel>& channel)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes a taken channel's files. REQUIRES: mu_ not held (file work).
  void DestroyChannel(const std::shared_ptr<Channel>& channel);

  // Counts a channel's arena and gates its growth.
  void ChargeQuota(const std::shared_ptr<Channel>& channel);
  // Marks `channel` dropped and deletes it if no session is joined;
  // returns the sessions that still keep it.
  uint32_t Drop(const std::shared_ptr<Channel>& channel, const char* by);
  // What follows a channel's MarkDropped: its name is freed, and it is
  // deleted if no session is joined. Returns the sessions still joined.
  uint32_t FinishDrop(const std::shared_ptr<Channel>& channel, const char* by);

  const CoreOptions options_;
  const uint64_t instance_id_;
  StorageQuota quota_;
  SecretDigest admin_capability_;  // set once by Open; empty if it could not be saved
  mutable base::Mutex mu_;
  std::map<std::string, std::shared_ptr<Channel>> channels_by_id_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> channel_ids_by_name_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  EventCounts events_;
  std::map<std::string, Orphan> orphans_ ABSL_GUARDED_BY(mu_);
  std::vector<UnrecoveredChannel> unrecovered_ ABSL_GUARDED_BY(mu_);
  // Checks that `name` is free (no channel has it, nor one the daemon
  // could not recover) and that there is room for another channel, then
  // reserves it under a fresh id, returned. `if_taken` and `other_name`
  // finish the ALREADY_EXISTS messages: what the caller can do instead.
  absl::StatusOr<std::string> ReserveChannelNameLocked(const std::string& name,
                                                       const char* if_taken,
                                                       const char* other_name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sessions Detach ended while their process still looked alive.
  struct PendingExit {
    SessionProcess process;
    uint64_t released = 0;
    std::chrono::steady_clock::time_point ended;
  };
  static constexpr size_t kMaxPendingExits = 4096;
  static constexpr std::chrono::seconds kPendingExitWindow{5};
  std::vector<PendingExit> pending_exits_ ABSL_GUARDED_BY(mu_);
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_CORE_H_
