#ifndef STRUCTD_SERVER_DAEMON_H_
#define STRUCTD_SERVER_DAEMON_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "config.h"
#include "structd/base/posix.h"
#include "core/core.h"
#include "core/periodic_snapshots.h"
#include "metrics.h"
#include "rpc/memory_server.h"
#include "rpc/rpc_util.h"
#include "rpc/services.h"

namespace structd::server {

// The running daemon: the core, the gRPC server, the Unix-socket listener
// that records each connection's peer credentials, and the lease reaper.
class Daemon {
 public:
  explicit Daemon(DaemonConfig config);
  ~Daemon();

  // Takes the state directory's lock, opens the core, binds the socket and
  // starts serving. FailedPrecondition if another daemon holds the state
  // directory or serves on the socket.
  absl::Status Start();
  // Blocks until Shutdown() is called (e.g. from a signal thread).
  void Wait();
  void Shutdown();
  // After Wait(): stops the listener and the reaper, removes the socket
  // and releases the state directory's lock. Everything the daemon keeps
  // is already on disk; what is left (the gRPC server, the core's
  // mappings) is memory only. Idempotent; the destructor calls it.
  void Close();

 private:
  void AcceptLoop();
  void ReapLoop();
  void RaiseDescriptorLimit();
  // Accept-loop thread only.
  void WarnThrottled(const std::string& what);
  void WarnIfStateMayBeRemoved() const;

  DaemonConfig config_;
  base::UniqueFd lock_fd_;
  base::UniqueFd listen_fd_;
  base::UniqueFd reserve_fd_;  // /dev/null, freed to refuse a connection at EMFILE
  std::chrono::steady_clock::time_point last_accept_warning_{};
  uint64_t suppressed_accept_warnings_ = 0;
  std::unique_ptr<Core> core_;
  PeerTable peers_;
  std::unique_ptr<MemoryServer> memory_server_;
  std::unique_ptr<SessionService> session_service_;
  std::unique_ptr<RegistryService> registry_service_;
  std::unique_ptr<InstancesService> instances_service_;
  std::unique_ptr<DaemonMetrics> metrics_;  // before the services that read it
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  // After the core (it reads channels) and stopped before the core goes.
  std::unique_ptr<PeriodicSnapshots> snapshots_;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::thread reap_thread_;
  uint64_t sweeps_ = 0;  // reap loop ticks (reap thread only)
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_DAEMON_H_
