#ifndef STRUCTD_CLIENT_CLIENT_H_
#define STRUCTD_CLIENT_CLIENT_H_

// Connecting to structd: one Client per process holds the session (the
// Attach stream, heartbeats, re-attach after a daemon restart) and hands
// out the channels this process joins.
//
//   auto client = structd::client::Client::Connect();
//   auto created = (*client)->CreateChannel("orders");
//   std::shared_ptr<Channel> ch = created->channel;
//
// Errors are absl::Status with the daemon's gRPC code and message. While
// the daemon is unreachable every call fails fast with UNAVAILABLE (none
// waits for it); mapped fields stay readable and writable throughout.
//
// Thread-safe: any thread may use a Client and its Channels.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace structd::client {

class Channel;
namespace internal {
class Connection;
}

struct ClientOptions {
  // The daemon's socket. "" means $STRUCTD_SOCKET, else the daemon's
  // default ($XDG_RUNTIME_DIR/structd/structd.sock, /run/structd/... for
  // root, or a private directory under /tmp).
  std::string socket;
  // Shown by `structctl sessions`. "" means the program's name.
  std::string name;
  // Deadline of every call to the daemon.
  std::chrono::milliseconds call_timeout{10000};
  // How long Connect waits for the daemon.
  std::chrono::milliseconds connect_timeout{5000};
  // After losing the daemon, keep re-attaching in the background and
  // re-join every channel once it is back.
  bool reconnect = true;
  // The uid the daemon must run as, checked with SO_PEERCRED before any
  // capability is sent (doc/security.md). Unset: $STRUCTD_DAEMON_UID, else
  // root, this process's uid, or the owner of a socket directory that
  // root provisioned (/run/structd of the system service).
  std::optional<uid_t> daemon_uid;
};

struct CreatedChannel {
  std::shared_ptr<Channel> channel;
  std::string owner_capability;   // drop, seal, join: keep it secret
  std::string member_capability;  // join: give it to the processes that share
};

class Client {
 public:
  // UNAVAILABLE ("no structd at PATH: start it with ...") if no daemon
  // answers within connect_timeout.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options = {});
  // Ends the session: the daemon releases every reference it still holds.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Creates channel `name` and joins it (as owner).
  absl::StatusOr<CreatedChannel> CreateChannel(const std::string& name);
  // Joins a channel by name or id with its owner or member capability.
  // Joining the same channel twice returns the same Channel.
  absl::StatusOr<std::shared_ptr<Channel>> Join(const std::string& channel,
                                                const std::string& capability);
  // Drops a channel (owner only); its arena is freed once no session is in it.
  absl::Status DropChannel(const std::string& channel,
                           const std::string& owner_capability);

  // Seals this process's behavior bindings: every later Bind, on any
  // channel, fails with FAILED_PRECONDITION.
  void SealBindings();

  // The current session ("" while detached), and whether it is attached.
  std::string session_id() const;
  bool attached() const;
  // How many times the session was re-established after losing the daemon.
  uint64_t reattach_count() const;
  // OK while the session is this process's, FAILED_PRECONDITION once it was
  // lost: the daemon ended it while the process could not be reached (its
  // process looked gone, or a restarted daemon could not let it resume),
  // and released every reference it held. Then every call of this Client
  // and its Channels fails with that status, and nothing re-attaches: the
  // Owned objects and views of the old session may name instances that now
  // belong to others, so stop using them and connect a new Client. (A
  // process that is merely stopped or slow keeps its session: the daemon
  // checks that the process is gone before it ends a session.)
  absl::Status session_status() const;
  const std::string& socket() const;

 private:
  explicit Client(std::shared_ptr<internal::Connection> connection);
  std::shared_ptr<internal::Connection> connection_;
};

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_CLIENT_H_
