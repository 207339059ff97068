#ifndef STRUCTD_BASE_POSIX_H_
#define STRUCTD_BASE_POSIX_H_

// The POSIX plumbing every layer needs, written once: errno to Status,
// owned descriptors, backing a file, replacing a file atomically, the
// clock. structd::base depends on nothing but Abseil; shm and the daemon
// link it, the client library does not expose it.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace structd::base {

// The one errno -> Status mapping, with `what` and strerror in the message:
// ENOENT -> NotFound; EACCES, EPERM -> PermissionDenied ("check file
// ownership and mode"); ENOSPC, EDQUOT, EFBIG -> ResourceExhausted ("free
// space on that file system"); ENOMEM, EMFILE, ENFILE -> ResourceExhausted;
// anything else -> Internal.
absl::Status ErrnoStatus(int err, const std::string& what);

// Owns a file descriptor; closes it on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() { *this = UniqueFd(); }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// A Unix stream socket (close-on-exec) connected to `path`; empty, with
// errno set by socket(2) or connect(2), if it could not be.
UniqueFd ConnectUnix(const std::string& path);

// posix_fallocate(fd, 0, bytes), retried on EINTR (tmpfs returns it when a
// signal is pending during a large allocation). Returns 0 or an errno.
int Fallocate(int fd, off_t bytes);

// Writes all of `bytes` to `fd`, retrying short writes and EINTR. Returns
// 0 or an errno.
int WriteAll(int fd, std::string_view bytes);

// Replaces `path` with a file holding `bytes`, whole or not at all: a
// uniquely named temporary file beside it (created with O_EXCL and
// O_NOFOLLOW, so a planted name or link is never written through) is
// renamed over `path`. `mode` is the new file's permission bits.
absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                 mode_t mode = 0600);

// Milliseconds since the Unix epoch.
uint64_t NowUnixMs();

// This process's pid without a system call per use (getpid() costs over
// a microsecond on some virtual machines, and bytes-field writes and
// mutex locks record the writer's pid): cached, and forgotten in the
// child of fork() (a pthread_atfork handler). A child made by a raw
// clone() that runs no fork handlers must exec before it uses fields.
pid_t CachedPid();

}  // namespace structd::base

#endif  // STRUCTD_BASE_POSIX_H_
