#include "structd/base/posix.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace structd::base {

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(
          absl::StrCat(msg, " (check file ownership and mode)"));
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return absl::ResourceExhaustedError(
          absl::StrCat(msg, " (free space on that file system)"));
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.release();
  }
  return *this;
}

int Fallocate(int fd, off_t bytes) {
  int err;
  do {
    err = posix_fallocate(fd, 0, bytes);
  } while (err == EINTR);
  return err;
}

int WriteAll(int fd, std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += static_cast<size_t>(n);
  }
  return 0;
}

UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    fd.reset();
    errno = err;
  }
  return fd;
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                 mode_t mode) {
  uint64_t nonce = 0;
  if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) nonce = 0;
  std::string tmp = absl::StrFormat("%s.tmp.%d.%016x", path, getpid(), nonce);
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (!fd) return ErrnoStatus(errno, "create " + tmp);
  if (int err = WriteAll(fd.get(), bytes); err != 0) {
    unlink(tmp.c_str());
    return ErrnoStatus(err, "write " + tmp);
  }
  fd.reset();
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return ErrnoStatus(err, "replace " + path);
  }
  return absl::OkStatus();
}

namespace {
std::atomic<pid_t> g_cached_pid{0};
void ForgetCachedPid() { g_cached_pid.store(0, std::memory_order_relaxed); }
}  // namespace

pid_t CachedPid() {
  pid_t pid = g_cached_pid.load(std::memory_order_relaxed);
  if (pid != 0) return pid;
  static const bool registered = pthread_atfork(nullptr, nullptr, ForgetCachedPid) == 0;
  pid = getpid();
  // Without the handler a forked child would keep its parent's pid.
  if (registered) g_cached_pid.store(pid, std::memory_order_relaxed);
  return pid;
}

uint64_t NowUnixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace structd::base
