#include "core/process_handle.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace structd::server {
namespace {

// Debian 12's headers predate both.
#ifndef SO_PEERPIDFD
constexpr int SO_PEERPIDFD = 77;
#endif
#ifndef SYS_pidfd_open
constexpr long SYS_pidfd_open = 434;
#endif
// statfs(2) f_type of pidfs, where every process's pidfd has an inode of
// its own (Linux 6.9+); older kernels put every pidfd on one anon inode.
constexpr long kPidfsMagic = 0x50494446;

}  // namespace

std::shared_ptr<const ProcessHandle> ProcessHandle::OfSocketPeer(int socket_fd, pid_t pid) {
  int fd = -1;
  socklen_t len = sizeof fd;
  if (getsockopt(socket_fd, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0) {
    return std::shared_ptr<const ProcessHandle>(new ProcessHandle(fd, pid));
  }
  return OfPid(pid);
}

std::shared_ptr<const ProcessHandle> ProcessHandle::OfPid(pid_t pid) {
  if (pid <= 0) return nullptr;
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return nullptr;
  return std::shared_ptr<const ProcessHandle>(new ProcessHandle(static_cast<int>(fd), pid));
}

ProcessHandle::ProcessHandle(int fd, pid_t pid) : fd_(fd), pid_(pid) {
  struct statfs fs;
  struct stat st;
  if (fstatfs(fd, &fs) == 0 && fs.f_type == kPidfsMagic && fstat(fd, &st) == 0) {
    identity_ = st.st_ino;
  }
}

bool ProcessHandle::SameProcess(const ProcessHandle& other) const {
  if (identity_ != 0 && other.identity_ != 0) return identity_ == other.identity_;
  return pid_ > 0 && pid_ == other.pid_;
}

ProcessHandle::~ProcessHandle() {
  if (fd_ >= 0) close(fd_);
}

bool ProcessHandle::Exited() const {
  pollfd p{fd_, POLLIN, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

}  // namespace structd::server
