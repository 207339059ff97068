#include "rpc/memory_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "structd/base/length_prefix.h"
#include "structd/v1/memory.pb.h"

namespace structd::server {
namespace {

// The reply as a frame, with `fd` (if >= 0) attached to its first byte.
bool SendReply(int socket, const v1::MemoryReply& reply, int fd) {
  std::string frame = base::Frame(reply.SerializeAsString());
  iovec iov{frame.data(), frame.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  }
  // The client reads its replies; one that does not is dropped rather
  // than waited for (the socket is non-blocking).
  ssize_t sent = sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  return sent == static_cast<ssize_t>(frame.size());
}

v1::MemoryReply Error(const absl::Status& s) {
  v1::MemoryReply r;
  r.set_code(static_cast<int32_t>(s.code()));
  r.set_message(std::string(s.message()));
  return r;
}

}  // namespace

MemoryServer::MemoryServer(Core* core, Options options)
    : core_(core), options_(std::move(options)) {}

MemoryServer::~MemoryServer() { Stop(); }

absl::Status MemoryServer::Start() {
  if (options_.path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory socket ", options_.path, " is longer than ", sizeof(sockaddr_un::sun_path) - 1,
        " bytes (use a shorter --socket)"));
  }
  unlink(options_.path.c_str());  // a stale one; the gRPC socket proved no daemon runs
  listen_fd_ = base::UniqueFd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_fd_) return base::ErrnoStatus(errno, "memory socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, options_.path.c_str(), sizeof(addr.sun_path) - 1);
  if (bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return base::ErrnoStatus(errno, "bind " + options_.path);
  }
  if (chmod(options_.path.c_str(), options_.socket_mode) != 0 ||
      (options_.gid != static_cast<gid_t>(-1) &&
       chown(options_.path.c_str(), static_cast<uid_t>(-1), options_.gid) != 0)) {
    return base::ErrnoStatus(errno, "set the mode and group of " + options_.path);
  }
  if (listen(listen_fd_.get(), 128) != 0) return base::ErrnoStatus(errno, "listen " + options_.path);
  wake_fd_ = base::UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) return base::ErrnoStatus(errno, "eventfd");
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void MemoryServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_) {
    uint64_t one = 1;
    (void)!write(wake_fd_.get(), &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  connections_.clear();
  if (listen_fd_) {
    listen_fd_.reset();
    unlink(options_.path.c_str());
  }
}

void MemoryServer::Loop() {
  std::vector<pollfd> fds;
  while (!stopping_.load()) {
    fds.clear();
    fds.push_back({listen_fd_.get(), POLLIN, 0});
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    for (const auto& [fd, c] : connections_) fds.push_back({fd, POLLIN, 0});
    int r = poll(fds.data(), fds.size(), 1000);
    if (r < 0 && errno != EINTR) {
      spdlog::error("memory socket: poll: {}", strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    for (size_t i = 2; i < fds.size(); ++i) {
      auto it = connections_.find(fds[i].fd);
      if (it == connections_.end()) continue;
      bool keep = true;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) keep = Serve(it->second);
      if (keep && now - it->second.last_request > options_.idle) keep = false;
      if (!keep) connections_.erase(it);
    }
    if (fds[0].revents & POLLIN) AcceptOne();
  }
}

void MemoryServer::AcceptOne() {
  base::UniqueFd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!fd) return;  // EMFILE and the like: the client sees the refusal
  Connection c;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return;
  c.peer = {true, cred.pid, cred.uid, cred.gid,
            ProcessHandle::OfSocketPeer(fd.get(), cred.pid)};
  struct stat st;
  if (fstat(fd.get(), &st) == 0) c.peer.connection = st.st_ino;
  uint32_t of_process = 0, of_uid = 0;
  for (const auto& [other_fd, other] : connections_) {
    if (other.peer.uid != cred.uid) continue;
    ++of_uid;
    if (other.peer.pid == cred.pid) ++of_process;
  }
  const char* refused = nullptr;
  if (of_process >= options_.max_connections_per_process) {
    refused = "memory socket: too many connections from this process (one per process is "
              "enough; raise max_connections_per_process)";
  } else if (of_uid >= options_.max_connections_per_uid) {
    refused = "memory socket: too many connections from this uid (raise "
              "max_sessions_per_uid, which bounds them too)";
  } else if (connections_.size() >= options_.max_connections) {
    refused = "memory socket: the daemon serves its most connections (max_sessions); retry "
              "shortly";
  }
  if (refused != nullptr) {
    SendReply(fd.get(), Error(absl::ResourceExhaustedError(refused)), -1);
    return;
  }
  c.last_request = std::chrono::steady_clock::now();
  c.fd = std::move(fd);
  int key = c.fd.get();
  connections_.emplace(key, std::move(c));
}

bool MemoryServer::Serve(Connection& c) {
  char buf[base::kFramePrefix + base::kMaxFrameBody];
  ssize_t n = recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EINTR;
  c.in.append(buf, static_cast<size_t>(n));
  while (std::optional<size_t> len = base::FrameBodyLength(c.in)) {
    if (*len == 0) return false;  // malformed: close
    if (c.in.size() < base::kFramePrefix + *len) break;
    std::string frame = c.in.substr(base::kFramePrefix, *len);
    c.in.erase(0, base::kFramePrefix + *len);
    c.last_request = std::chrono::steady_clock::now();
    if (!Answer(c, frame)) return false;
  }
  return c.in.size() <= base::kFramePrefix + base::kMaxFrameBody;
}

bool MemoryServer::Answer(Connection& c, const std::string& frame) {
  v1::MemoryRequest request;
  if (!request.ParseFromString(frame)) return false;
  absl::StatusOr<std::shared_ptr<Channel>> channel = core_->AuthorizeMemory(
      request.session_id(), request.session_secret(), c.peer, request.channel());
  if (!channel.ok()) {
    // Not a session of this process: answered, then closed, so guessing
    // costs a connection each time and cannot keep one alive.
    absl::StatusCode code = channel.status().code();
    bool sent = SendReply(c.fd.get(), Error(channel.status()), -1);
    return sent && code != absl::StatusCode::kUnauthenticated &&
           code != absl::StatusCode::kPermissionDenied;
  }
  if (request.file() > shm::kMaxExtents) {
    return SendReply(c.fd.get(),
                     Error(absl::NotFoundError(absl::StrCat(
                         "memory: file ", request.file(),
                         " does not exist (0 is the header, N + 1 is extent N)"))),
                     -1);
  }
  shm::ArenaFile file{request.file() == 0 ? shm::ArenaFile::kHeader
                                          : static_cast<int32_t>(request.file() - 1)};
  absl::StatusOr<base::UniqueFd> fd = (*channel)->OpenArenaFile(file);
  if (!fd.ok()) return SendReply(c.fd.get(), Error(fd.status()), -1);
  struct stat st;
  if (fstat(fd->get(), &st) != 0) {
    return SendReply(c.fd.get(), Error(base::ErrnoStatus(errno, "memory: stat")), -1);
  }
  v1::MemoryReply ok;
  ok.set_size(static_cast<uint64_t>(st.st_size));
  return SendReply(c.fd.get(), ok, fd->get());
}

}  // namespace structd::server
