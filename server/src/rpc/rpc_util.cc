#include "server/src/rpc/rpc_util.h"


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
  RecordPeer("fd:" + std::to_string(fd), creds);
}

void PeerTable::RecordPeer(const std::string& peer,
                           const PeerCredentials& creds) {
  std::lock_guard<std::mutex> lock(mu_);
  by_peer_[peer] = creds;
}

PeerCredentials PeerTable::Lookup(const std::string& peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_peer_.find(peer);
  return it == by_peer_.end() ? PeerCredentials{} : it->second;
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
  if (absl::Status s = core.CheckSession(id, peers.Lookup(context.peer()));
      !s.ok()) {
    return s;
  }
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
