#ifndef STRUCTD_SERVER_CORE_PROCESS_HANDLE_H_
#define STRUCTD_SERVER_CORE_PROCESS_HANDLE_H_

// A kernel handle on a client process (a pidfd), so the daemon can tell
// whether the process still exists without trusting its pid, which may
// be invisible (another pid namespace) or reused.

#include <sys/types.h>

#include <cstdint>
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
  // True if both handles name one process. Decided by the pidfds'
  // inodes where the kernel gives each process its own (pidfs, Linux
  // 6.9+), else by pid (never 0: a pid the daemon cannot see proves
  // nothing).
  bool SameProcess(const ProcessHandle& other) const;
  // True if SameProcess can tell this process from others: it has a pidfs
  // identity or a pid the daemon can see.
  bool Identifiable() const { return identity_ != 0 || pid_ > 0; }

 private:
  ProcessHandle(int fd, pid_t pid);
  int fd_;
  pid_t pid_;             // as the daemon sees it; 0 if invisible
  uint64_t identity_ = 0;  // the pidfs inode; 0 on older kernels
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_PROCESS_HANDLE_H_
