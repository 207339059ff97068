#ifndef STRUCTD_CLIENT_SRC_MEMORY_SOCKET_H_
#define STRUCTD_CLIENT_SRC_MEMORY_SOCKET_H_

// The client end of the daemon's memory socket (proto/structd/v1/
// memory.proto, doc/memory-socket.md): asks for one file of a joined
// channel's arena and receives its descriptor (SCM_RIGHTS).

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "structd/base/mutex.h"
#include "structd/base/posix.h"
#include "structd/shm/arena.h"

namespace structd::client::internal {

// Thread safety: every method may be called concurrently; requests go one
// at a time over one connection, opened on first use and again after the
// daemon closed it (idle, or restarted).
class MemorySocket {
 public:
  // `daemon_uid`: as VerifyDaemon's (connection.h), checked before the
  // first request on every new connection.
  MemorySocket(std::string path, std::optional<uid_t> daemon_uid);

  // The descriptor of `file` of `channel`'s arena. The daemon's status on
  // refusal (PERMISSION_DENIED, FAILED_PRECONDITION, NOT_FOUND, ...);
  // UNAVAILABLE if it cannot be reached.
  absl::StatusOr<base::UniqueFd> Fetch(const std::string& session_id,
                                       const std::string& session_secret,
                                       const std::string& channel, shm::ArenaFile file);
  const std::string& path() const { return path_; }

 private:
  absl::Status ConnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const std::optional<uid_t> daemon_uid_;
  base::Mutex mu_;
  base::UniqueFd fd_ ABSL_GUARDED_BY(mu_);
};

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_SRC_MEMORY_SOCKET_H_
