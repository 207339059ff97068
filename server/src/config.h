#ifndef STRUCTD_SERVER_CONFIG_H_
#define STRUCTD_SERVER_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace structd::server {

// Everything structd can be told. Sources, later ones winning: built-in
// defaults, the TOML file (--config or STRUCTD_CONFIG), environment
// variables (STRUCTD_SOCKET, STRUCTD_STATE_DIR, STRUCTD_LOG_LEVEL), flags.
// deploy/config/structd.toml lists every option with its default.
struct DaemonConfig {
  std::string socket;     // Unix socket path
  std::string state_dir;  // channels, arenas, ledgers (tmpfs recommended)
  std::string log_level = "info";  // trace|debug|info|warn|error
  std::string config_file;         // where settings were read from, if any
  uint64_t extent_size = 64ull << 20;  // default for new channels, bytes
  uint32_t max_extents = 1024;         // default for new channels
  uint32_t lease_ms = 15000;           // heartbeat deadline
  uint32_t max_channels = 256;
  uint32_t max_sessions = 4096;
  uint32_t max_sessions_per_process = 16;
  uint32_t max_sessions_per_uid = 1024;
  // Connections one process may hold open to the daemon at once.
  uint32_t max_connections_per_process = 64;
  // A connection that makes no call at all for this long is closed (it
  // holds a descriptor and does nothing: a half-open or hostile peer).
  uint32_t idle_connection_ms = 10000;
  uint32_t max_fields = 256;
  uint32_t max_type_bytes = 1u << 20;  // payload of one struct
  // What one channel may hold (its metadata stays bounded).
  uint32_t max_types_per_channel = 1024;
  uint64_t max_registry_bytes = 4u << 20;  // keys + canonical layouts
  uint32_t max_roots_per_channel = 100000;
};

enum class ParseOutcome { kRun, kExitOk, kExitUsage };

// Parses argv (and the file and environment it points to). On kExitOk /
// kExitUsage the caller exits with 0 / 2 (help was printed, or an error
// explaining the fix).
ParseOutcome LoadConfig(int argc, char** argv, DaemonConfig& config);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CONFIG_H_
