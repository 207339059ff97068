#ifndef STRUCTD_SERVER_RPC_RPC_UTIL_H_
#define STRUCTD_SERVER_RPC_RPC_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "structd/base/mutex.h"
#include "absl/status/status.h"
#include "core/core.h"
#include "structd/shm/type_token.h"

namespace structd::server {

// absl and gRPC share the canonical status codes; the mapping is 1:1.
grpc::Status ToGrpc(const absl::Status& s);

// The connections the daemon accepted, with their peer credentials, by
// the peer string gRPC reports for connections handed over with
// AddInsecureChannelFromFd ("fd:N"). The listener records SO_PEERCRED at
// accept time; every call looks its caller up here.
//
// The table also bounds what connections cost: it counts a process's
// open connections, forgets connections gRPC has closed (the descriptor
// no longer names the same socket), and shuts down connections that never
// made a call (a peer that only holds a descriptor).
//
// Thread safety: all methods may be called concurrently.
class PeerTable {
 public:
  // A connection adopted from accept(): gRPC names it "fd:N".
  void Record(int fd, const PeerCredentials& creds);
  // Any peer name as ServerContext::peer() reports it ("" for a handler
  // called in-process, as the service tests do). Never swept.
  void RecordPeer(const std::string& peer, const PeerCredentials& creds);
  // Unknown credentials (known = false) for an unrecognized peer. Marks
  // the connection as used.
  PeerCredentials Lookup(const std::string& peer) const;
  // A pidfd of the peer process of connection `peer` (null if none can be
  // had). REQUIRES: a call on that connection is in flight, so its
  // descriptor is open.
  std::shared_ptr<const ProcessHandle> ProcessOf(const std::string& peer) const;
  // Open connections of process `pid` of `uid` (closed ones are forgotten
  // first).
  size_t OpenConnections(pid_t pid, uid_t uid);
  // Forgets closed connections and shuts down those that made no call
  // within `idle` of being accepted. Returns how many it shut down.
  size_t Sweep(std::chrono::milliseconds idle);
  size_t size() const;

 private:
  struct Connection {
    PeerCredentials creds;
    int fd = -1;    // -1: not a socket of ours (RecordPeer)
    uint64_t dev = 0, ino = 0;  // which socket the fd named at accept
    std::chrono::steady_clock::time_point accepted;
    mutable bool used = false;
  };
  // True if `c.fd` still names the socket it named at accept.
  static bool StillOpen(const Connection& c);
  void ForgetClosedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable base::Mutex mu_;
  std::map<std::string, Connection> by_peer_ ABSL_GUARDED_BY(mu_);
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

// The skeleton every channel-scoped handler shares, written once: the
// caller's session and joined channel, then `fn(call)` (an absl::Status:
// fill the response on success), then the status mapped to gRPC.
template <typename Fn>
grpc::Status OnJoinedChannel(grpc::ServerContext& context, const Core& core,
                             const PeerTable& peers, const std::string& channel, Fn&& fn) {
  absl::StatusOr<CallerChannel> call = JoinedChannel(context, core, peers, channel);
  if (!call.ok()) return ToGrpc(call.status());
  return ToGrpc(fn(*call));
}

// The same for calls that need a session but no channel.
template <typename Fn>
grpc::Status OnSession(grpc::ServerContext& context, const Core& core, const PeerTable& peers,
                       Fn&& fn) {
  absl::StatusOr<std::string> session = CallerSession(context, core, peers);
  if (!session.ok()) return ToGrpc(session.status());
  return ToGrpc(fn(*session));
}

}  // namespace structd::server

#endif  // STRUCTD_SERVER_RPC_RPC_UTIL_H_
