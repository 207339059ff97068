#ifndef STRUCTD_CLIENT_SRC_CONNECTION_H_
#define STRUCTD_CLIENT_SRC_CONNECTION_H_

// The process's link to the daemon: the gRPC channel and stubs, and the
// session (Attach stream) kept alive by a supervisor thread that sends
// heartbeats and, when the daemon goes away, re-attaches with backoff and
// re-joins every channel. Internal: generated protobuf types stay out of
// the public headers.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "structd/base/mutex.h"
#include "structd/client/client.h"
#include "structd/v1/instances.grpc.pb.h"
#include "structd/v1/registry.grpc.pb.h"
#include "structd/v1/session.grpc.pb.h"

#include <optional>
#include <set>

#include "client/src/memory_socket.h"

namespace structd::client::internal {

// True if `path` is a Unix socket (no daemon can answer otherwise: fail
// fast instead of waiting out the connect timeout).
bool SocketExists(const std::string& path);

// Before anything secret goes to the daemon at `socket` (a capability, a
// session secret): the kernel's word that a trusted uid serves it. Trusted
// are root, this process's uid, `daemon_uid` (ClientOptions::daemon_uid or
// $STRUCTD_DAEMON_UID) and, when none is set, the owner of the socket's
// directory if root made that place (its parent is root's and writable by
// nobody else: /run/structd of a system service). The socket's directory
// and its ancestors must be root's or a trusted uid's and not writable by
// others unless sticky, so nobody else can swap the socket. Checked with
// SO_PEERCRED on a probe connection. PERMISSION_DENIED saying who serves
// the socket and how to trust it; UNAVAILABLE if nothing answers.
absl::Status VerifyDaemon(const std::string& socket, std::optional<uid_t> daemon_uid);
// What VerifyDaemon checks, keeping the checked connection: the caller
// sends its secrets over this very connection (the memory socket).
absl::StatusOr<base::UniqueFd> ConnectToDaemon(const std::string& socket,
                                               std::optional<uid_t> daemon_uid);
// ClientOptions::daemon_uid, else $STRUCTD_DAEMON_UID, else none.
std::optional<uid_t> ExpectedDaemonUid(std::optional<uid_t> configured);

// grpc::Status -> absl::Status, same code and message.
absl::Status FromGrpc(const grpc::Status& status);

class Connection {
 public:
  // Connects and attaches; UNAVAILABLE naming the socket if no daemon
  // answers within options.connect_timeout.
  static absl::StatusOr<std::shared_ptr<Connection>> Open(ClientOptions options);
  ~Connection();

  // Ends the session (closes the Attach stream) and stops reconnecting.
  void Close();

  // Runs one unary call with the session metadata and the call deadline.
  // UNAVAILABLE at once while detached. `*sent` (if given) says whether
  // the request left this process: after a failure with it false, the
  // daemon certainly did nothing.
  template <typename Stub, typename Request, typename Response>
  absl::Status Call(Stub& stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                 Response*),
                    const Request& request, Response* response, bool* sent = nullptr) const {
    grpc::ClientContext context;
    if (sent != nullptr) *sent = false;
    if (absl::Status s = Prepare(context); !s.ok()) return s;
    if (sent != nullptr) *sent = true;
    return FromGrpc((stub.*method)(&context, request, response));
  }

  v1::Registry::Stub& registry() const { return *registry_; }
  v1::Instances::Stub& instances() const { return *instances_; }

  std::string session_id() const;
  bool attached() const;
  // True once Close() was called: no call will ever be made again.
  bool closed() const;
  // OK, or FAILED_PRECONDITION once the session was lost: the daemon ended
  // it (and released everything it held) while this process could not be
  // reached, so a re-attach got a new session instead of resuming. From
  // then on every call fails with this status and nothing re-attaches.
  absl::Status session_status() const;
  // False once the session was lost (session_status() says why); a load.
  bool session_ok() const { return !session_lost_.load(std::memory_order_acquire); }
  uint64_t reattach_count() const { return reattaches_.load(); }
  // The most refs one call may carry, as the daemon said in `attached`.
  size_t max_refs_per_call() const { return max_refs_per_call_.load(); }
  const ClientOptions& options() const { return options_; }

  // A descriptor of `file` of joined channel `channel_id`'s arena, from
  // the daemon's memory socket (memory.proto).
  absl::StatusOr<base::UniqueFd> FetchArenaFile(const std::string& channel_id,
                                                shm::ArenaFile file) const;

  // Channels to re-join after a re-attach (weakly held).
  void Track(std::weak_ptr<Channel> channel);
  // An already joined channel of that name or id, if any.
  std::shared_ptr<Channel> FindChannel(const std::string& name_or_id);

  std::atomic<bool> bindings_sealed{false};

 private:
  explicit Connection(ClientOptions options);
  absl::Status Prepare(grpc::ClientContext& context) const;

  // One Attach stream: hello, then `attached`. On success the stream is
  // installed and the session published.
  absl::Status AttachOnce(std::chrono::milliseconds timeout);
  // The supervisor: heartbeats while attached; re-attaches after the
  // stream ends unless closing.
  void Supervise();
  void Heartbeats(std::chrono::milliseconds every);
  bool HeartbeatsShouldStop() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closing_ || session_id_.empty();
  }
  void RejoinChannels();

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Session::Stub> session_stub_;
  std::unique_ptr<v1::Registry::Stub> registry_;
  std::unique_ptr<v1::Instances::Stub> instances_;

  mutable base::Mutex mu_;
  base::CondVar cv_;  // signalled when closing_ or session_id_ change
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::string session_id_ ABSL_GUARDED_BY(mu_);  // "" while detached
  std::string resume_id_ ABSL_GUARDED_BY(mu_);   // the last session, to resume
  std::string resume_secret_ ABSL_GUARDED_BY(mu_);
  std::string lost_ ABSL_GUARDED_BY(mu_);  // why the session was lost; "" if not
  std::atomic<bool> session_lost_{false};  // set with lost_
  uint32_t lease_ms_ ABSL_GUARDED_BY(mu_) = 15000;
  // The memory socket the daemon named in `attached` (null before).
  std::shared_ptr<MemorySocket> memory_ ABSL_GUARDED_BY(mu_);
  // The Attach stream and its context. Installed and reset under mu_ and
  // write_mu_; written (heartbeats) under write_mu_; read by Supervise
  // alone while it is installed (so not annotated: two locks or none).
  std::unique_ptr<grpc::ClientContext> attach_context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AttachRequest, v1::AttachEvent>> stream_;
  base::Mutex write_mu_ ABSL_ACQUIRED_AFTER(mu_);  // serializes writes to stream_
  std::vector<std::weak_ptr<Channel>> channels_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> reattaches_{0};
  std::atomic<size_t> max_refs_per_call_{100000};
  std::thread supervisor_;
};

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_SRC_CONNECTION_H_
