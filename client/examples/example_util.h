#ifndef STRUCTD_CLIENT_EXAMPLES_EXAMPLE_UTIL_H_
#define STRUCTD_CLIENT_EXAMPLES_EXAMPLE_UTIL_H_

// What the examples share: starting copies of themselves as worker
// processes (fork+exec of /proc/self/exe, so each worker is a fresh
// process with its own Client), and dying with a message.

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"

extern char** environ;

namespace structd::examples {

// Exits with the status's message unless it is OK.
inline void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
    std::exit(1);
  }
}

// Starts this program again with `args`; returns its pid.
inline pid_t SpawnSelf(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string self = "/proc/self/exe";
  argv.push_back(self.data());
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    std::exit(1);
  }
  return pid;
}

// Starts `argv` (looked up in PATH); returns its pid.
inline pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (args.empty() || posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawnp");
    std::exit(1);
  }
  return pid;
}

// Waits for `pid`; true if it exited with 0.
inline bool WaitOk(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace structd::examples

#endif  // STRUCTD_CLIENT_EXAMPLES_EXAMPLE_UTIL_H_
