#ifndef STRUCTD_SERVER_CONFIG_H_
#define STRUCTD_SERVER_CONFIG_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/core.h"
#include "core/periodic_snapshots.h"
#include "structd/shm/arena.h"

namespace structd::server {

// Everything structd can be told. Sources, later ones winning: built-in
// defaults, the TOML file (--config or STRUCTD_CONFIG), environment
// variables (STRUCTD_SOCKET, STRUCTD_STATE_DIR, STRUCTD_LOG_LEVEL,
// STRUCTD_LOG_FORMAT, STRUCTD_METRICS_LISTEN), flags.
// deploy/config/structd.toml lists every option with its default.
struct DaemonConfig {
  std::string socket;     // Unix socket path
  std::string state_dir;  // channels, arenas, ledgers (tmpfs recommended)
  std::string log_level = "info";  // trace|debug|info|warn|error
  std::string log_format = "text";  // text|json (log_format.h)
  std::string metrics_listen;       // HOST:PORT of the Prometheus endpoint; "" = off
  std::string config_file;         // where settings were read from, if any
  // Every default below is the domain's own (one place each: the structs
  // named), so the daemon, its tests and its docs cannot disagree.
  uint64_t extent_size = shm::ArenaOptions{}.extent_size;  // new channels, bytes
  uint32_t max_extents = shm::ArenaOptions{}.max_extents;  // new channels
  uint32_t lease_ms = static_cast<uint32_t>(CoreOptions{}.lease.count());
  uint32_t max_channels = CoreOptions{}.max_channels;
  uint32_t max_sessions = CoreOptions{}.max_sessions;
  uint32_t max_sessions_per_process = CoreOptions{}.max_sessions_per_process;
  uint32_t max_sessions_per_uid = CoreOptions{}.max_sessions_per_uid;
  uint32_t max_fields = shm::LayoutLimits{}.max_fields;
  uint32_t max_type_bytes = shm::LayoutLimits{}.max_payload_size;  // one struct
  uint32_t max_types_per_channel = RegistryLimits{}.max_types;
  uint64_t max_registry_bytes = RegistryLimits{}.max_registry_bytes;
  uint32_t max_roots_per_channel = Channel::Limits{}.max_roots;
  uint64_t max_bytes_per_channel = QuotaLimits{}.max_bytes_per_channel;
  uint64_t max_bytes_per_uid = QuotaLimits{}.max_bytes_per_uid;
  uint64_t max_bytes_total = QuotaLimits{}.max_bytes_total;  // 0: half the file system
  uint32_t max_channels_per_uid = QuotaLimits{}.max_channels_per_uid;
  uint32_t max_arena_files = QuotaLimits{}.max_arena_files;  // memfd arenas only
  uint32_t max_arena_files_per_uid = QuotaLimits{}.max_arena_files_per_uid;
  uint32_t drop_idle_channels_after_s = static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(CoreOptions{}.drop_idle_channels_after)
          .count());  // 0: never
  // The listener's own (no domain struct holds these).
  // Connections one process may hold open to the daemon at once.
  uint32_t max_connections_per_process = 64;
  // A connection that makes no call at all for this long is closed (it
  // holds a descriptor and does nothing: a half-open or hostile peer).
  uint32_t idle_connection_ms = 10000;
  // Who may connect (doc/security.md): the socket's permission bits (octal
  // text) and group ("" = the daemon's own group). The runtime directory
  // is made traversable by that group when the mode grants it access.
  std::string socket_mode = "0600";
  std::string socket_group;
  bool allow_unbound_peers = CoreOptions{}.allow_unbound_peers;
  // Where new channels' arenas live: "files" in state_dir (kept across
  // any restart until reboot; resized files are repaired by a sweep) or
  // "memfd", sealed against resizing and kept across restarts only in
  // systemd's descriptor store (doc/operations.md, doc/security.md).
  std::string arena_backing = "files";
  // The daemon's own snapshots (doc/snapshots.md): off while
  // snapshot_dir is empty; snapshot_channels is a comma-separated list
  // of names, or "*" for every channel.
  std::string snapshot_dir;
  std::string snapshot_channels = "*";
  uint32_t snapshot_interval_s =
      static_cast<uint32_t>(PeriodicSnapshotOptions{}.interval.count());
  uint32_t snapshot_keep = PeriodicSnapshotOptions{}.keep;

  // The domain core's options from these settings.
  CoreOptions ToCoreOptions() const;
  PeriodicSnapshotOptions ToSnapshotOptions() const;
};

// socket_mode's octal text as permission bits: InvalidArgument unless it
// is 0600, 0660 or 0666-like (owner read+write, nothing executable).
absl::StatusOr<uint32_t> ParseSocketMode(const std::string& text);

// What socket_mode and socket_group mean for the files: the socket's
// mode, its group (-1: leave the daemon's), and the mode of a socket
// directory the daemon creates (0710 when the group may connect: search
// only, so the group can reach the socket but not list the directory).
struct SocketAccess {
  uint32_t socket_mode = 0600;
  uint32_t dir_mode = 0700;
  gid_t gid = static_cast<gid_t>(-1);
};
// Where the memory socket (memory.proto) lives, beside the gRPC socket:
// "X.sock" -> "X.mem.sock", anything else -> "X.mem".
std::string MemorySocketPath(const std::string& socket);
// InvalidArgument for a bad mode or a group that does not exist.
absl::StatusOr<SocketAccess> ResolveSocketAccess(const DaemonConfig& config);

enum class ParseOutcome { kRun, kExitOk, kExitUsage };

// Parses argv (and the file and environment it points to). On kExitOk /
// kExitUsage the caller exits with 0 / 2 (help was printed, or an error
// explaining the fix).
ParseOutcome LoadConfig(int argc, char** argv, DaemonConfig& config);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CONFIG_H_
