#ifndef STRUCTD_SHM_INTERNAL_POSIX_H_
#define STRUCTD_SHM_INTERNAL_POSIX_H_

// Small RAII wrappers over POSIX calls used by the shm library. Not part of
// the public API.

#include <chrono>
#include <string>

#include "absl/status/status.h"

namespace structd::shm::internal {

// Maps an errno value to the closest absl code, with `what` and strerror in
// the message: ENOENT -> NotFound, EACCES/EPERM -> PermissionDenied,
// ENOSPC/EDQUOT/EFBIG/ENOMEM -> ResourceExhausted, else Internal.
absl::Status ErrnoStatus(int err, const std::string& what);

// Owns a file descriptor.
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
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Holds flock(LOCK_EX) on a descriptor for its lifetime. The kernel drops
// the lock if the holder dies, so a crashed holder never blocks others; a
// live holder blocks us at most `timeout` (error() is then EWOULDBLOCK).
class FileLock {
 public:
  FileLock(int fd, std::chrono::milliseconds timeout);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  bool ok() const { return error_ == 0; }
  int error() const { return error_; }

 private:
  int fd_;
  int error_ = 0;
};

}  // namespace structd::shm::internal

#endif  // STRUCTD_SHM_INTERNAL_POSIX_H_
