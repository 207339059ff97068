#include "client/src/memory_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "client/src/connection.h"
#include "structd/base/length_prefix.h"
#include "structd/v1/memory.pb.h"

namespace structd::client::internal {
namespace {

constexpr int kReplyTimeoutMs = 10000;

absl::Status Unavailable(const std::string& path, const std::string& what) {
  return absl::UnavailableError(absl::StrCat("memory socket ", path, ": ", what,
                                             " (is structd running? it restarts, the client "
                                             "retries)"));
}

// Waits until `fd` is readable; false on timeout or error.
bool WaitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, kReplyTimeoutMs);
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

}  // namespace

MemorySocket::MemorySocket(std::string path, std::optional<uid_t> daemon_uid)
    : path_(std::move(path)), daemon_uid_(daemon_uid) {}

absl::Status MemorySocket::ConnectLocked() {
  if (fd_) return absl::OkStatus();
  // The connection that will carry the session secret is the one checked.
  absl::StatusOr<base::UniqueFd> fd = ConnectToDaemon(path_, daemon_uid_);
  if (!fd.ok()) return fd.status();
  fd_ = std::move(*fd);
  return absl::OkStatus();
}

absl::StatusOr<base::UniqueFd> MemorySocket::Fetch(const std::string& session_id,
                                                   const std::string& session_secret,
                                                   const std::string& channel,
                                                   shm::ArenaFile file) {
  v1::MemoryRequest request;
  request.set_session_id(session_id);
  request.set_session_secret(session_secret);
  request.set_channel(channel);
  request.set_file(file.extent == shm::ArenaFile::kHeader ? 0
                                                          : static_cast<uint32_t>(file.extent) + 1);
  std::string frame = base::Frame(request.SerializeAsString());

  base::MutexLock lock(&mu_);
  absl::Status last;
  // A connection the daemon closed (idle, restart) fails the first try.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (absl::Status s = ConnectLocked(); !s.ok()) return s;
    ssize_t sent = send(fd_.get(), frame.data(), frame.size(), MSG_NOSIGNAL);
    if (sent != static_cast<ssize_t>(frame.size())) {
      last = Unavailable(path_, sent < 0 ? absl::StrCat("send: ", strerror(errno))
                                         : std::string("send: short write"));
      fd_.reset();
      continue;
    }
    std::string in;
    base::UniqueFd passed;
    size_t want = 4;
    bool broken = false;
    while (in.size() < want) {
      if (!WaitReadable(fd_.get())) {
        broken = true;
        break;
      }
      char buf[base::kFramePrefix + base::kMaxFrameBody];
      iovec iov{buf, sizeof buf};
      // Room for more descriptors than the one expected, so extras are
      // received (and closed) rather than truncated away.
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
      if (n <= 0) {
        broken = true;
        break;
      }
      int descriptors = 0;
      for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t k = 0; k < n; ++k) {
          int received;
          std::memcpy(&received, CMSG_DATA(cm) + k * sizeof(int), sizeof received);
          base::UniqueFd owned(received);  // closed unless it is the one
          if (++descriptors == 1 && !passed) passed = std::move(owned);
        }
      }
      if (descriptors > 1 || (msg.msg_flags & MSG_CTRUNC) != 0) {
        // Not what the protocol sends: not the daemon, or a broken one.
        fd_.reset();
        return absl::InternalError(absl::StrCat(
            "memory socket ", path_, ": a reply with ", descriptors,
            " descriptors or truncated control data (the protocol sends one)"));
      }
      in.append(buf, static_cast<size_t>(n));
      if (want == base::kFramePrefix) {
        if (std::optional<size_t> len = base::FrameBodyLength(in)) {
          if (*len == 0) {
            broken = true;
            break;
          }
          want = base::kFramePrefix + *len;
        }
      }
    }
    if (broken) {
      last = Unavailable(path_, "the daemon closed the connection or did not answer");
      fd_.reset();
      continue;
    }
    v1::MemoryReply reply;
    if (in.size() != want ||
        !reply.ParseFromArray(in.data() + base::kFramePrefix,
                              static_cast<int>(want - base::kFramePrefix))) {
      fd_.reset();
      return absl::InternalError(absl::StrCat("memory socket ", path_, ": a malformed reply"));
    }
    if (reply.code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(reply.code()), reply.message());
    }
    if (!passed) {
      return absl::InternalError(
          absl::StrCat("memory socket ", path_, ": an OK reply without a descriptor"));
    }
    return passed;
  }
  return last;
}

}  // namespace structd::client::internal
