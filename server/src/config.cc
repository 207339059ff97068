#include "config.h"

#include <grp.h>

#include <algorithm>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <iostream>
#include <map>
#include <optional>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "log_format.h"
#include "structd/shm/default_paths.h"

namespace structd::server {
namespace {

// One row per option: the TOML key (the flag is the key with '-' for '_'),
// the environment variable if any, the help text, and where it lives in
// DaemonConfig. Every source (file, environment, flags, --check-config)
// walks this table, so an option is written down once.
using Member = std::variant<std::string DaemonConfig::*, uint32_t DaemonConfig::*,
                            uint64_t DaemonConfig::*, bool DaemonConfig::*>;
struct Option {
  const char* key;
  const char* env;  // nullptr: no environment variable
  const char* help;
  Member member;
};

const Option kOptions[] = {
    {"socket", "STRUCTD_SOCKET", "Unix socket to serve on", &DaemonConfig::socket},
    {"state_dir", "STRUCTD_STATE_DIR",
     "Directory for channels, arenas and ledgers; put it on tmpfs", &DaemonConfig::state_dir},
    {"log_level", "STRUCTD_LOG_LEVEL", "trace, debug, info, warn, error or off",
     &DaemonConfig::log_level},
    {"log_format", "STRUCTD_LOG_FORMAT",
     "text (for people) or json (one JSON object per line, for log shippers)",
     &DaemonConfig::log_format},
    {"metrics_listen", "STRUCTD_METRICS_LISTEN",
     "HOST:PORT to serve Prometheus metrics on over HTTP (GET /metrics), e.g. "
     "127.0.0.1:9464; empty: off (structctl metrics works either way). Anyone who can "
     "reach it can read them: keep it on a local or private address",
     &DaemonConfig::metrics_listen},
    {"extent_size", nullptr,
     "Bytes per arena extent for new channels, and the most a client may ask for: a "
     "multiple of 65536 from 131072 to 268435456",
     &DaemonConfig::extent_size},
    {"max_extents", nullptr,
     "Extents a new channel's arena may grow to, and the most a client may ask for; 1 to "
     "16383",
     &DaemonConfig::max_extents},
    {"max_bytes_per_channel", nullptr, "Arena bytes one channel may hold",
     &DaemonConfig::max_bytes_per_channel},
    {"max_bytes_per_uid", nullptr, "Arena bytes the channels one uid created may hold",
     &DaemonConfig::max_bytes_per_uid},
    {"max_bytes_total", nullptr,
     "Arena bytes all channels may hold; 0 = half of the file system under state_dir (of "
     "the machine's memory with arena_backing = memfd)",
     &DaemonConfig::max_bytes_total},
    {"max_channels_per_uid", nullptr,
     "Channels one uid may have created whose files still exist",
     &DaemonConfig::max_channels_per_uid},
    {"max_arena_files", nullptr,
     "Files (a header and one per extent) all sealed memfd arenas may have; each costs the "
     "daemon a descriptor and systemd's store one: keep it at most FileDescriptorStoreMax=",
     &DaemonConfig::max_arena_files},
    {"max_arena_files_per_uid", nullptr,
     "Files the sealed memfd arenas of the channels one uid created may have",
     &DaemonConfig::max_arena_files_per_uid},
    {"drop_idle_channels_after_s", nullptr,
     "Drop a channel no session has joined for this many seconds (its memory is freed); "
     "0 keeps channels until they are dropped",
     &DaemonConfig::drop_idle_channels_after_s},
    {"lease_ms", nullptr,
     "A session that sends no heartbeat for this long, and whose process is gone or "
     "cannot be observed, is ended",
     &DaemonConfig::lease_ms},
    {"max_channels", nullptr, "Channels in the daemon", &DaemonConfig::max_channels},
    {"max_sessions", nullptr, "Sessions in the daemon", &DaemonConfig::max_sessions},
    {"max_sessions_per_process", nullptr, "Sessions one process may hold",
     &DaemonConfig::max_sessions_per_process},
    {"max_sessions_per_uid", nullptr, "Sessions one uid may hold",
     &DaemonConfig::max_sessions_per_uid},
    {"max_connections_per_process", nullptr,
     "Connections one process may hold open to the daemon",
     &DaemonConfig::max_connections_per_process},
    {"idle_connection_ms", nullptr,
     "A connection that makes no call at all for this long is closed",
     &DaemonConfig::idle_connection_ms},
    {"max_fields", nullptr, "Fields per registered type", &DaemonConfig::max_fields},
    {"max_type_bytes", nullptr, "Payload bytes of one struct", &DaemonConfig::max_type_bytes},
    {"max_types_per_channel", nullptr, "Types one channel may register",
     &DaemonConfig::max_types_per_channel},
    {"max_registry_bytes", nullptr,
     "Bytes of type keys and canonical layouts one channel may hold",
     &DaemonConfig::max_registry_bytes},
    {"max_roots_per_channel", nullptr, "Roots one channel may hold",
     &DaemonConfig::max_roots_per_channel},
    {"socket_mode", nullptr,
     "Permission bits of the socket, in octal: 0600 lets only the daemon's user connect, "
     "0660 also the socket_group",
     &DaemonConfig::socket_mode},
    {"socket_group", nullptr,
     "Group (name or gid) that owns the socket and may traverse its directory; clients of "
     "other uids in this group may connect (with socket_mode 0660). Empty: the daemon's "
     "group, and no other user can connect",
     &DaemonConfig::socket_group},
    {"allow_unbound_peers", nullptr,
     "Accept clients the kernel gives no pidfd for (pid invisible to the daemon and no "
     "SO_PEERPIDFD); their sessions are bound to their connection instead of their process",
     &DaemonConfig::allow_unbound_peers},
    {"arena_backing", nullptr,
     "Where new channels' memory lives: files (in state_dir; kept across every restart "
     "until reboot) or memfd (sealed, so no member can cut or grow it; kept across restarts "
     "only in systemd's descriptor store, lost when the service is stopped)",
     &DaemonConfig::arena_backing},
    {"snapshot_dir", "STRUCTD_SNAPSHOT_DIR",
     "Directory on a disk file system for the daemon's own snapshots of channels; each "
     "chosen channel is written every snapshot_interval_s and at stop, and restored from "
     "its newest snapshot at start if the state directory lost it (a reboot). Empty: off",
     &DaemonConfig::snapshot_dir},
    {"snapshot_channels", nullptr,
     "Channels the daemon snapshots: names separated by commas, or * for every channel",
     &DaemonConfig::snapshot_channels},
    {"snapshot_interval_s", nullptr, "Seconds between two snapshots of a channel",
     &DaemonConfig::snapshot_interval_s},
    {"snapshot_keep", nullptr, "Snapshots kept per channel (older ones are removed)",
     &DaemonConfig::snapshot_keep},
};

std::string Flag(const char* key) {
  std::string f = std::string("--") + key;
  for (char& c : f) {
    if (c == '_') c = '-';
  }
  return f;
}

std::string ValueText(const DaemonConfig& c, const Member& m) {
  return std::visit(
      [&](auto member) -> std::string {
        using T = std::decay_t<decltype(c.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return c.*member;
        } else if constexpr (std::is_same_v<T, bool>) {
          return c.*member ? "true" : "false";
        } else {
          return std::to_string(c.*member);
        }
      },
      m);
}

// Sets an option from text (environment, flag); false with `err` set if
// the text is not a value of the option's type.
bool SetFromText(DaemonConfig& c, const Option& o, const std::string& text, std::string& err) {
  return std::visit(
      [&](auto member) -> bool {
        using T = std::decay_t<decltype(c.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          c.*member = text;
          return true;
        } else if constexpr (std::is_same_v<T, bool>) {
          if (text == "true" || text == "1") {
            c.*member = true;
          } else if (text == "false" || text == "0") {
            c.*member = false;
          } else {
            err = std::string("option '") + o.key + "': '" + text +
                  "' is not a boolean (use true or false)";
            return false;
          }
          return true;
        } else {
          char* end = nullptr;
          errno = 0;
          unsigned long long v = std::strtoull(text.c_str(), &end, 10);
          if (text.empty() || *end != '\0' || errno != 0 || text[0] == '-' ||
              v > std::numeric_limits<T>::max()) {
            err = std::string("option '") + o.key + "': '" + text +
                  "' is not a number in range (use a non-negative integer up to " +
                  std::to_string(std::numeric_limits<T>::max()) + ")";
            return false;
          }
          c.*member = static_cast<T>(v);
          return true;
        }
      },
      o.member);
}

bool SetFromToml(DaemonConfig& c, const Option& o, const toml::node& n, std::string& err) {
  return std::visit(
      [&](auto member) -> bool {
        using T = std::decay_t<decltype(c.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (auto v = n.value<std::string>()) {
            c.*member = *v;
            return true;
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          if (auto v = n.value<bool>()) {
            c.*member = *v;
            return true;
          }
        } else {
          if (auto v = n.value<int64_t>();
              v && *v >= 0 && static_cast<uint64_t>(*v) <= std::numeric_limits<T>::max()) {
            c.*member = static_cast<T>(*v);
            return true;
          }
        }
        err = std::string("option '") + o.key + "' has the wrong type or is out of range";
        return false;
      },
      o.member);
}

bool ValidLevel(const std::string& l) {
  return l == "trace" || l == "debug" || l == "info" || l == "warn" || l == "error" ||
         l == "off";
}

// The checks that need more than a type. "" if the configuration is valid.
std::string Invalid(const DaemonConfig& c) {
  shm::ArenaOptions arena;
  arena.extent_size = c.extent_size;
  arena.max_extents = c.max_extents;
  if (absl::Status s = shm::ValidateArenaOptions(arena); !s.ok()) return std::string(s.message());
  if (!ValidLevel(c.log_level)) {
    return "log level '" + c.log_level + "' is not one of trace, debug, info, warn, error, off";
  }
  if (!ValidLogFormat(c.log_format)) {
    return "log format '" + c.log_format + "' is not one of text, json";
  }
  if (c.lease_ms < 100) return "lease_ms " + std::to_string(c.lease_ms) + " is too short (use >= 100)";
  if (c.max_sessions_per_process < 1 || c.max_sessions_per_uid < 1 ||
      c.max_connections_per_process < 2) {
    return "max_sessions_per_process and max_sessions_per_uid must be >= 1, "
           "max_connections_per_process >= 2";
  }
  if (absl::StatusOr<SocketAccess> access = ResolveSocketAccess(c); !access.ok()) {
    return std::string(access.status().message());
  }
  if (c.arena_backing != "files" && c.arena_backing != "memfd") {
    return "arena_backing '" + c.arena_backing + "' is not one of files, memfd";
  }
  if (c.idle_connection_ms < 100) {
    return "idle_connection_ms " + std::to_string(c.idle_connection_ms) +
           " is too short (use >= 100)";
  }
  if (c.snapshot_interval_s < 1) return "snapshot_interval_s must be >= 1";
  if (c.snapshot_keep < 1) return "snapshot_keep must be >= 1 (it keeps the newest N)";
  for (const std::string& name : c.ToSnapshotOptions().channels) {
    if (name == "*") continue;
    if (absl::Status s = ValidateChannelName(name); !s.ok()) {
      return "snapshot_channels: " + std::string(s.message());
    }
  }
  if (!c.snapshot_dir.empty() && c.snapshot_dir[0] != '/') {
    return "snapshot_dir '" + c.snapshot_dir + "' is not an absolute path";
  }
  return "";
}

}  // namespace

absl::StatusOr<uint32_t> ParseSocketMode(const std::string& text) {
  uint32_t mode = 0;
  bool digits = !text.empty() && text.size() <= 4;
  for (char ch : text) {
    if (ch < '0' || ch > '7') digits = false;
    mode = mode * 8 + static_cast<uint32_t>(ch - '0');
  }
  if (!digits || (mode & 0600) != 0600 || (mode & 0111) != 0 || mode > 0777) {
    return absl::InvalidArgumentError(
        "socket_mode '" + text +
        "' is not permission bits in octal with owner read and write and nothing executable "
        "(use 0600 for the daemon's user only, or 0660 with socket_group)");
  }
  return mode;
}

std::string MemorySocketPath(const std::string& socket) {
  if (socket.size() > 5 && socket.ends_with(".sock")) {
    return socket.substr(0, socket.size() - 5) + ".mem.sock";
  }
  return socket + ".mem";
}

absl::StatusOr<SocketAccess> ResolveSocketAccess(const DaemonConfig& config) {
  SocketAccess a;
  absl::StatusOr<uint32_t> mode = ParseSocketMode(config.socket_mode);
  if (!mode.ok()) return mode.status();
  a.socket_mode = *mode;
  if ((a.socket_mode & 0006) != 0) {
    a.dir_mode = 0711;
  } else if ((a.socket_mode & 0060) != 0) {
    a.dir_mode = 0710;
  }
  const std::string& g = config.socket_group;
  if (g.empty()) return a;
  if (std::all_of(g.begin(), g.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    errno = 0;
    unsigned long long gid = std::strtoull(g.c_str(), nullptr, 10);
    if (errno != 0 || gid >= UINT32_MAX) {
      return absl::InvalidArgumentError("socket_group '" + g +
                                        "' is not a gid (use a number below 4294967295)");
    }
    a.gid = static_cast<gid_t>(gid);
    return a;
  }
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  if (getgrnam_r(g.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError("socket_group '" + g +
                                      "' is not a group of this system (create it, e.g. "
                                      "`groupadd structd`, or give a numeric gid)");
  }
  a.gid = found->gr_gid;
  return a;
}

PeriodicSnapshotOptions DaemonConfig::ToSnapshotOptions() const {
  PeriodicSnapshotOptions o;
  o.dir = snapshot_dir;
  for (absl::string_view name : absl::StrSplit(snapshot_channels, ',', absl::SkipWhitespace())) {
    o.channels.emplace_back(absl::StripAsciiWhitespace(name));
  }
  o.interval = std::chrono::seconds(snapshot_interval_s);
  o.keep = snapshot_keep;
  o.daemon_version = STRUCTD_VERSION;
  return o;
}

CoreOptions DaemonConfig::ToCoreOptions() const {
  CoreOptions o;
  o.state_dir = state_dir;
  o.arena.extent_size = extent_size;
  o.arena.max_extents = max_extents;
  o.limits.layout.max_fields = max_fields;
  o.limits.layout.max_payload_size = max_type_bytes;
  o.limits.registry.max_types = max_types_per_channel;
  o.limits.registry.max_registry_bytes = max_registry_bytes;
  o.limits.max_roots = max_roots_per_channel;
  o.max_channels = max_channels;
  o.max_sessions = max_sessions;
  o.max_sessions_per_process = max_sessions_per_process;
  o.max_sessions_per_uid = max_sessions_per_uid;
  o.lease = std::chrono::milliseconds(lease_ms);
  o.allow_unbound_peers = allow_unbound_peers;
  o.quotas.max_bytes_per_channel = max_bytes_per_channel;
  o.quotas.max_bytes_per_uid = max_bytes_per_uid;
  o.quotas.max_bytes_total = max_bytes_total;
  o.quotas.max_channels_per_uid = max_channels_per_uid;
  o.quotas.max_arena_files = max_arena_files;
  o.quotas.max_arena_files_per_uid = max_arena_files_per_uid;
  o.drop_idle_channels_after = std::chrono::seconds(drop_idle_channels_after_s);
  o.arena_memfd = arena_backing == "memfd";
  return o;
}

ParseOutcome LoadConfig(int argc, char** argv, DaemonConfig& config) {
  config.socket = shm::DefaultRuntimeDir() + "/structd.sock";
  config.state_dir = shm::DefaultStateDir();
  const DaemonConfig defaults = config;

  CLI::App app{
      "structd: shares fixed-layout structs between processes through shared "
      "memory. Control over gRPC on a Unix socket; data never crosses it.\n"
      "Settings come from built-in defaults, then the TOML file, then "
      "STRUCTD_* environment variables, then flags."};
  app.set_version_flag("--version", STRUCTD_VERSION);
  std::optional<std::string> config_file;
  std::map<std::string, std::optional<std::string>> flags;
  for (const Option& o : kOptions) {
    std::string help = std::string(o.help) + " [default: " + ValueText(defaults, o.member);
    if (o.env != nullptr) help += std::string("; env ") + o.env;
    app.add_option(Flag(o.key), flags[o.key], help + "]");
  }
  app.add_option("--config", config_file,
                 "TOML config file (see deploy/config/structd.toml) [env STRUCTD_CONFIG]");
  bool check_config = false;
  app.add_flag("--check-config", check_config,
               "Validate the settings (file, environment, flags), print the "
               "effective configuration as TOML and exit (0 if valid, 2 if not)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? ParseOutcome::kExitOk : ParseOutcome::kExitUsage;
  }
  auto fail = [](const std::string& where, const std::string& err) {
    std::fprintf(stderr, "structd: %s%s\n", where.c_str(), err.c_str());
    return ParseOutcome::kExitUsage;
  };

  if (!config_file) {
    if (const char* env = std::getenv("STRUCTD_CONFIG")) config_file = env;
  }
  if (config_file) {
    config.config_file = *config_file;
    toml::table t;
    try {
      t = toml::parse_file(*config_file);
    } catch (const toml::parse_error& e) {
      return fail("config " + *config_file + ": ",
                  std::string(e.description()) + " at line " +
                      std::to_string(e.source().begin.line) +
                      " (fix the file, or start without --config)");
    }
    for (const auto& [key, value] : t) {
      const Option* option = nullptr;
      for (const Option& o : kOptions) {
        if (key.str() == o.key) option = &o;
      }
      if (option == nullptr) {
        return fail("config " + *config_file + ": ",
                    "unknown option '" + std::string(key.str()) +
                        "' (see deploy/config/structd.toml for the list)");
      }
      std::string err;
      if (!SetFromToml(config, *option, value, err)) {
        return fail("config " + *config_file + ": ", err);
      }
    }
  }
  for (const Option& o : kOptions) {
    std::string err;
    if (o.env == nullptr) continue;
    if (const char* env = std::getenv(o.env); env && *env) {
      if (!SetFromText(config, o, env, err)) return fail(std::string(o.env) + ": ", err);
    }
  }
  for (const Option& o : kOptions) {
    std::string err;
    if (const std::optional<std::string>& v = flags[o.key]) {
      if (!SetFromText(config, o, *v, err)) return fail(Flag(o.key) + ": ", err);
    }
  }
  if (std::string err = Invalid(config); !err.empty()) return fail("", err);
  if (check_config) {
    toml::table effective;
    for (const Option& o : kOptions) {
      std::visit(
          [&](auto member) {
            using T = std::decay_t<decltype(config.*member)>;
            if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, bool>) {
              effective.insert(o.key, config.*member);
            } else {
              effective.insert(o.key, static_cast<int64_t>(config.*member));
            }
          },
          o.member);
    }
    std::cout << "# structd " << STRUCTD_VERSION << ": effective configuration"
              << (config.config_file.empty() ? "" : " (file " + config.config_file + ")")
              << "\n"
              << effective << "\n";
    return ParseOutcome::kExitOk;
  }
  return ParseOutcome::kRun;
}

}  // namespace structd::server
