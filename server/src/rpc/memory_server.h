#ifndef STRUCTD_SERVER_RPC_MEMORY_SERVER_H_
#define STRUCTD_SERVER_RPC_MEMORY_SERVER_H_

// The memory socket (proto/structd/v1/memory.proto, doc/memory-socket.md):
// where a member of a channel gets the descriptors of its arena's files,
// passed with SCM_RIGHTS. gRPC cannot carry descriptors, so this is a
// second Unix socket with its own small protocol and one thread.
//
// Every request is checked by the core (Core::AuthorizeMemory) against the
// kernel's credentials of this connection, never against anything the
// client says about itself.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "core/core.h"
#include "structd/base/posix.h"

namespace structd::server {

class MemoryServer {
 public:
  struct Options {
    std::string path;             // the socket
    uint32_t socket_mode = 0600;  // as the gRPC socket's
    gid_t gid = static_cast<gid_t>(-1);
    uint32_t max_connections_per_process = 64;
    uint32_t max_connections_per_uid = 1024;  // the daemon: max_sessions_per_uid
    uint32_t max_connections = 4096;          // the daemon: max_sessions
    // A connection with no complete request for this long is closed (the
    // client reconnects when it next needs a descriptor).
    std::chrono::milliseconds idle{10000};
  };

  MemoryServer(Core* core, Options options);
  ~MemoryServer();
  MemoryServer(const MemoryServer&) = delete;
  MemoryServer& operator=(const MemoryServer&) = delete;

  // Binds the socket (replacing a stale one) and starts serving.
  absl::Status Start();
  // Stops serving and removes the socket. Idempotent.
  void Stop();

 private:
  struct Connection {
    base::UniqueFd fd;
    PeerCredentials peer;
    std::string in;  // bytes received, not yet a whole frame
    std::chrono::steady_clock::time_point last_request;
  };
  void Loop();
  void AcceptOne();
  // Reads and answers what `c` sent; false when it must be closed.
  bool Serve(Connection& c);
  // Answers one request; false when the reply could not be sent.
  bool Answer(Connection& c, const std::string& frame);

  Core* const core_;
  const Options options_;
  base::UniqueFd listen_fd_;
  base::UniqueFd wake_fd_;  // an eventfd: Stop() wakes the loop
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  // Owned by the loop thread only.
  std::map<int, Connection> connections_;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_RPC_MEMORY_SERVER_H_
