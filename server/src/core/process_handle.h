#ifndef STRUCTD_SERVER_CORE_PROCESS_HANDLE_H_
#define STRUCTD_SERVER_CORE_PROCESS_HANDLE_H_

// A kernel handle on a client process (a pidfd), so the daemon can tell
// whether the process still exists without trusting its pid, which may
// be invisible (another pid namespace) or reused.

#include <sys/types.h>

#include <memory>

namespace structd::server {

// Owns a pidfd. Thread safety: immutable after construction.
class ProcessHandle {
 public:
  // The peer of a connected Unix socket, through SO_PEERPIDFD (Linux 6.5+;
  // works across pid namespaces); else pidfd_open(pid) when the pid is
  // visible (pid > 0). Null if neither works.
  static std::shared_ptr<const ProcessHandle> OfSocketPeer(int socket_fd, pid_t pid);
  // pidfd_open(pid); null if the process does not exist or pid <= 0.
  static std::shared_ptr<const ProcessHandle> OfPid(pid_t pid);
  ~ProcessHandle();
  ProcessHandle(const ProcessHandle&) = delete;
  ProcessHandle& operator=(const ProcessHandle&) = delete;

  // True once the process has exited (the pidfd polls readable). A
  // stopped process (SIGSTOP, a debugger) has not exited.
  bool Exited() const;
  int fd() const { return fd_; }

 private:
  explicit ProcessHandle(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_PROCESS_HANDLE_H_
