#include "server/src/config.h"

#include <cstdio>
#include <cstdlib>
#include <optional>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include <iostream>

#include "structd/shm/default_paths.h"

namespace structd::server {
namespace {

bool ValidLevel(const std::string& l) {
  return l == "trace" || l == "debug" || l == "info" || l == "warn" ||
         l == "error" || l == "off";
}

template <typename T>
bool ReadToml(const toml::table& t, const char* key, T& out, std::string& err) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return true;
  if constexpr (std::is_same_v<T, std::string>) {
    if (auto v = n->value<std::string>()) {
      out = *v;
      return true;
    }
  } else {
    if (auto v = n->value<int64_t>(); v && *v >= 0) {
      out = static_cast<T>(*v);
      return true;
    }
  }
  err = std::string("option '") + key + "' has the wrong type";
  return false;
}

}  // namespace

ParseOutcome LoadConfig(int argc, char** argv, DaemonConfig& config) {
  config.socket = shm::DefaultRuntimeDir() + "/structd.sock";
  config.state_dir = shm::DefaultStateDir();

  CLI::App app{
      "structd: shares fixed-layout structs between processes through shared "
      "memory. Control over gRPC on a Unix socket; data never crosses it.\n"
      "Settings come from built-in defaults, then the TOML file, then "
      "STRUCTD_* environment variables, then flags."};
  app.set_version_flag("--version", STRUCTD_VERSION);
  std::optional<std::string> socket, state_dir, log_level, config_file;
  std::optional<uint64_t> extent_size;
  std::optional<uint32_t> max_extents, lease_ms, max_channels, max_sessions, max_fields,
      max_type_bytes;
  bool check_config = false;
  app.add_option("--socket", socket,
                 "Unix socket to serve on [default: " + config.socket +
                     "; env STRUCTD_SOCKET]");
  app.add_option("--state-dir", state_dir,
                 "Directory for channels, arenas and ledgers; put it on "
                 "tmpfs [default: " + config.state_dir +
                     "; env STRUCTD_STATE_DIR]");
  app.add_option("--config", config_file,
                 "TOML config file (see deploy/config/structd.toml) [env "
                 "STRUCTD_CONFIG]");
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error or off [default: info; env "
                 "STRUCTD_LOG_LEVEL]");
  app.add_option("--extent-size", extent_size,
                 "Bytes per arena extent for new channels: a multiple of "
                 "65536 from 131072 to 268435456 [default: 67108864]");
  app.add_option("--max-extents", max_extents,
                 "Extents a new channel's arena may grow to, 1 to 16383 "
                 "[default: 1024]");
  app.add_option("--lease-ms", lease_ms,
                 "A session that sends no heartbeat for this long is ended "
                 "[default: 15000]");
  app.add_option("--max-channels", max_channels, "[default: 256]");
  app.add_option("--max-sessions", max_sessions, "[default: 4096]");
  app.add_option("--max-fields", max_fields, "Fields per registered type [default: 256]");
  app.add_option("--max-type-bytes", max_type_bytes,
                 "Payload bytes of one struct [default: 1048576]");
  app.add_flag("--check-config", check_config,
               "Validate the settings (file, environment, flags), print the "
               "effective configuration as TOML and exit (0 if valid, 2 if not)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? ParseOutcome::kExitOk : ParseOutcome::kExitUsage;
  }

  if (!config_file) {
    if (const char* env = std::getenv("STRUCTD_CONFIG")) config_file = env;
  }
  if (config_file) {
    config.config_file = *config_file;
    toml::table t;
    try {
      t = toml::parse_file(*config_file);
    } catch (const toml::parse_error& e) {
      std::fprintf(stderr,
                   "structd: config %s: %s at line %d (fix the file, or "
                   "start without --config)\n",
                   config_file->c_str(), std::string(e.description()).c_str(),
                   static_cast<int>(e.source().begin.line));
      return ParseOutcome::kExitUsage;
    }
    static const char* kKnown[] = {"socket",       "state_dir",    "log_level",
                                   "extent_size",  "max_extents",  "lease_ms",
                                   "max_channels", "max_sessions", "max_fields",
                                   "max_type_bytes"};
    for (const auto& [key, value] : t) {
      bool known = false;
      for (const char* k : kKnown) known = known || key.str() == k;
      if (!known) {
        std::fprintf(stderr,
                     "structd: config %s: unknown option '%s' (see "
                     "deploy/config/structd.toml for the list)\n",
                     config_file->c_str(), std::string(key.str()).c_str());
        return ParseOutcome::kExitUsage;
      }
    }
    std::string err;
    bool ok = ReadToml(t, "socket", config.socket, err) &&
              ReadToml(t, "state_dir", config.state_dir, err) &&
              ReadToml(t, "log_level", config.log_level, err) &&
              ReadToml(t, "extent_size", config.extent_size, err) &&
              ReadToml(t, "max_extents", config.max_extents, err) &&
              ReadToml(t, "lease_ms", config.lease_ms, err) &&
              ReadToml(t, "max_channels", config.max_channels, err) &&
              ReadToml(t, "max_sessions", config.max_sessions, err) &&
              ReadToml(t, "max_fields", config.max_fields, err) &&
              ReadToml(t, "max_type_bytes", config.max_type_bytes, err);
    if (!ok) {
      std::fprintf(stderr, "structd: config %s: %s\n", config_file->c_str(),
                   err.c_str());
      return ParseOutcome::kExitUsage;
    }
  }
  if (const char* env = std::getenv("STRUCTD_SOCKET"); env && *env) {
    config.socket = env;
  }
  if (const char* env = std::getenv("STRUCTD_STATE_DIR"); env && *env) {
    config.state_dir = env;
  }
  if (const char* env = std::getenv("STRUCTD_LOG_LEVEL"); env && *env) {
    config.log_level = env;
  }
  if (socket) config.socket = *socket;
  if (state_dir) config.state_dir = *state_dir;
  if (log_level) config.log_level = *log_level;
  if (extent_size) config.extent_size = *extent_size;
  if (max_extents) config.max_extents = *max_extents;
  if (lease_ms) config.lease_ms = *lease_ms;
  if (max_channels) config.max_channels = *max_channels;
  if (max_sessions) config.max_sessions = *max_sessions;
  if (max_fields) config.max_fields = *max_fields;
  if (max_type_bytes) config.max_type_bytes = *max_type_bytes;

  if (!ValidLevel(config.log_level)) {
    std::fprintf(stderr,
                 "structd: log level '%s' is not one of trace, debug, info, "
                 "warn, error, off\n",
                 config.log_level.c_str());
    return ParseOutcome::kExitUsage;
  }
  if (config.lease_ms < 100) {
    std::fprintf(stderr, "structd: lease_ms %u is too short (use >= 100)\n",
                 config.lease_ms);
    return ParseOutcome::kExitUsage;
  }
  if (config.extent_size % 65536 != 0 || config.extent_size < 131072 ||
      config.extent_size > 268435456) {
    std::fprintf(stderr,
                 "structd: extent_size %llu: use a multiple of 65536 from 131072 to "
                 "268435456\n",
                 static_cast<unsigned long long>(config.extent_size));
    return ParseOutcome::kExitUsage;
  }
  if (config.max_extents < 1 || config.max_extents > 16383) {
    std::fprintf(stderr, "structd: max_extents %u: use 1 to 16383\n", config.max_extents);
    return ParseOutcome::kExitUsage;
  }
  if (check_config) {
    toml::table effective{{"socket", config.socket},
                          {"state_dir", config.state_dir},
                          {"log_level", config.log_level},
                          {"extent_size", static_cast<int64_t>(config.extent_size)},
                          {"max_extents", static_cast<int64_t>(config.max_extents)},
                          {"lease_ms", static_cast<int64_t>(config.lease_ms)},
                          {"max_channels", static_cast<int64_t>(config.max_channels)},
                          {"max_sessions", static_cast<int64_t>(config.max_sessions)},
                          {"max_fields", static_cast<int64_t>(config.max_fields)},
                          {"max_type_bytes", static_cast<int64_t>(config.max_type_bytes)}};
    std::cout << "# structd " << STRUCTD_VERSION << ": effective configuration"
              << (config.config_file.empty() ? "" : " (file " + config.config_file + ")")
              << "\n"
              << effective << "\n";
    return ParseOutcome::kExitOk;
  }
  return ParseOutcome::kRun;
}

}  // namespace structd::server
