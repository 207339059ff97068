#include "rpc/rpc_util.h"

#include <sys/socket.h>
#include <sys/stat.h>


#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace structd::server {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // Bad requests are the caller's business: debug level only.
  spdlog::debug("request refused: {}", s.ToString());
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

void PeerTable::Record(int fd, const PeerCredentials& creds) {
  Connection c;
  c.creds = creds;
  c.fd = fd;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    c.dev = st.st_dev;
    c.ino = st.st_ino;
  }
  c.accepted = std::chrono::steady_clock::now();
  base::MutexLock lock(&mu_);
  by_peer_["fd:" + std::to_string(fd)] = c;
}

void PeerTable::RecordPeer(const std::string& peer,
                           const PeerCredentials& creds) {
  Connection c;
  c.creds = creds;
  c.used = true;
  base::MutexLock lock(&mu_);
  by_peer_[peer] = c;
}

PeerCredentials PeerTable::Lookup(const std::string& peer) const {
  base::MutexLock lock(&mu_);
  auto it = by_peer_.find(peer);
  if (it == by_peer_.end()) return PeerCredentials{};
  it->second.used = true;
  PeerCredentials creds = it->second.creds;
  if (it->second.ino != 0) creds.connection = it->second.ino;
  return creds;
}

std::shared_ptr<const ProcessHandle> PeerTable::ProcessOf(const std::string& peer) const {
  base::MutexLock lock(&mu_);
  auto it = by_peer_.find(peer);
  if (it == by_peer_.end()) return nullptr;
  if (it->second.fd < 0) return ProcessHandle::OfPid(it->second.creds.pid);
  return ProcessHandle::OfSocketPeer(it->second.fd, it->second.creds.pid);
}

bool PeerTable::StillOpen(const Connection& c) {
  struct stat st;
  return fstat(c.fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == c.dev &&
         st.st_ino == c.ino;
}

void PeerTable::ForgetClosedLocked() {
  for (auto it = by_peer_.begin(); it != by_peer_.end();) {
    if (it->second.fd >= 0 && !StillOpen(it->second)) {
      it = by_peer_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t PeerTable::OpenConnections(pid_t pid, uid_t uid) {
  base::MutexLock lock(&mu_);
  ForgetClosedLocked();
  size_t n = 0;
  for (const auto& [peer, c] : by_peer_) {
    if (c.fd >= 0 && c.creds.pid == pid && c.creds.uid == uid) ++n;
  }
  return n;
}

size_t PeerTable::Sweep(std::chrono::milliseconds idle) {
  base::MutexLock lock(&mu_);
  ForgetClosedLocked();
  size_t closed = 0;
  auto now = std::chrono::steady_clock::now();
  for (auto& [peer, c] : by_peer_) {
    if (c.fd < 0 || c.used || now - c.accepted < idle) continue;
    // gRPC owns the descriptor: shut the socket down (gRPC then sees EOF
    // and closes it) rather than closing a number it may reuse.
    if (StillOpen(c)) {
      shutdown(c.fd, SHUT_RDWR);
      ++closed;
    }
    c.used = true;  // once
  }
  return closed;
}

size_t PeerTable::size() const {
  base::MutexLock lock(&mu_);
  return by_peer_.size();
}

std::string SessionIdOf(const grpc::ServerContext& context) {
  const auto& md = context.client_metadata();
  auto it = md.find("structd-session");
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

absl::StatusOr<shm::TypeToken> ParseToken(const std::string& text) {
  std::optional<shm::TypeToken> t = shm::TypeToken::FromHex(text);
  if (!t) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token '", text.substr(0, 64),
        "': not a type token (use the 32 hex digits RegisterType returned)"));
  }
  return *t;
}

}  // namespace structd::server

namespace structd::server {

absl::StatusOr<std::string> CallerSession(grpc::ServerContext& context,
                                          const Core& core,
                                          const PeerTable& peers) {
  std::string id = SessionIdOf(context);
  PeerCredentials peer = peers.Lookup(context.peer());
  // A pid the daemon cannot see proves nothing: the process itself does.
  if (peer.known && peer.pid == 0) peer.process = peers.ProcessOf(context.peer());
  if (absl::Status s = core.CheckSession(id, peer); !s.ok()) return s;
  return id;
}

absl::StatusOr<CallerChannel> JoinedChannel(grpc::ServerContext& context,
                                            const Core& core,
                                            const PeerTable& peers,
                                            const std::string& channel) {
  absl::StatusOr<std::string> session = CallerSession(context, core, peers);
  if (!session.ok()) return session.status();
  absl::StatusOr<std::shared_ptr<Channel>> ch = core.Joined(*session, channel);
  if (!ch.ok()) return ch.status();
  return CallerChannel{std::move(*session), std::move(*ch)};
}

}  // namespace structd::server
