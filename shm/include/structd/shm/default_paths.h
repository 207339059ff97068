#ifndef STRUCTD_SHM_DEFAULT_PATHS_H_
#define STRUCTD_SHM_DEFAULT_PATHS_H_

// Default locations shared by the daemon, the client library and structctl,
// so that all of them meet without configuration.
//
//   root:      /run/structd/structd.sock, state in /run/structd/state
//   non-root:  $XDG_RUNTIME_DIR/structd/... if that directory exists,
//              else /tmp/structd-UID/... (created 0700)
//
// STRUCTD_SOCKET overrides the socket for every program.

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace structd::shm {

inline std::string DefaultRuntimeDir() {
  if (geteuid() == 0) return "/run/structd";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  struct stat st;
  if (xdg != nullptr && *xdg != '\0' && stat(xdg, &st) == 0 &&
      S_ISDIR(st.st_mode)) {
    return std::string(xdg) + "/structd";
  }
  return "/tmp/structd-" + std::to_string(geteuid());
}

inline std::string DefaultSocketPath() {
  const char* env = std::getenv("STRUCTD_SOCKET");
  if (env != nullptr && *env != '\0') return env;
  return DefaultRuntimeDir() + "/structd.sock";
}

inline std::string DefaultStateDir() { return DefaultRuntimeDir() + "/state"; }

}  // namespace structd::shm

#endif  // STRUCTD_SHM_DEFAULT_PATHS_H_
