#ifndef STRUCTD_SERVER_RPC_RPC_UTIL_H_
#define STRUCTD_SERVER_RPC_RPC_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "server/src/core/core.h"
#include "structd/shm/type_token.h"

namespace structd::server {

// absl and gRPC share the canonical status codes; the mapping is 1:1.
grpc::Status ToGrpc(const absl::Status& s);

// Peer credentials of accepted connections, by the peer string gRPC
// reports for connections handed over with AddInsecureChannelFromFd
// ("fd:N"). The listener records SO_PEERCRED at accept time.
//
// Thread safety: all methods may be called concurrently.
class PeerTable {
 public:
  // A connection adopted from accept(): gRPC names it "fd:N".
  void Record(int fd, const PeerCredentials& creds);
  // Any peer name as ServerContext::peer() reports it ("" for a handler
  // called in-process, as the service tests do).
  void RecordPeer(const std::string& peer, const PeerCredentials& creds);
  // Unknown credentials (known = false) for an unrecognized peer.
  PeerCredentials Lookup(const std::string& peer) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, PeerCredentials> by_peer_;
};

// The "structd-session" metadata value, or "".
std::string SessionIdOf(const grpc::ServerContext& context);

// Parses a 32-digit hex token; InvalidArgument naming the field otherwise.
absl::StatusOr<shm::TypeToken> ParseToken(const std::string& text);


// The calling session of a session-bound rpc: the metadata value, checked
// against the caller's peer credentials.
absl::StatusOr<std::string> CallerSession(grpc::ServerContext& context,
                                          const Core& core,
                                          const PeerTable& peers);

// The calling session and a channel it has joined: what every
// channel-scoped rpc starts with.
struct CallerChannel {
  std::string session;
  std::shared_ptr<Channel> channel;
};
absl::StatusOr<CallerChannel> JoinedChannel(grpc::ServerContext& context,
                                            const Core& core,
                                            const PeerTable& peers,
                                            const std::string& channel);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_RPC_RPC_UTIL_H_
