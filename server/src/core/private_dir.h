#ifndef STRUCTD_SERVER_CORE_PRIVATE_DIR_H_
#define STRUCTD_SERVER_CORE_PRIVATE_DIR_H_

#include <sys/types.h>

#include <set>
#include <string>

#include "absl/status/status.h"

namespace structd::server {

// Makes `path` a directory that only the daemon controls, creating it and
// missing parents, and refuses one another user could have prepared:
//  - `path` itself (opened without following a symlink) must be owned by
//    the daemon's uid; its mode is set to `mode` (and its group to `gid`
//    unless gid is -1);
//  - every ancestor must be owned by root or the daemon's uid and not be
//    writable by group or others unless sticky (/tmp, /dev/shm): else its
//    owner could swap what lies below.
// PermissionDenied naming the directory, its owner and the fix: a
// squatted /tmp/structd-UID is refused, never used (doc/security.md).
absl::Status MakeSafeDir(const std::string& path, mode_t mode, gid_t gid = static_cast<gid_t>(-1));

// The directory that holds the socket: created like MakeSafeDir(path,
// mode, gid) if missing; an existing one is left as it is but must pass
// the ancestor rule above itself (root's or the daemon's, not writable by
// others unless sticky), so that nobody else can swap the socket.
absl::Status MakeSocketDir(const std::string& path, mode_t mode, gid_t gid);

// MakeSafeDir with mode 0700: the daemon's state is readable by its own
// uid only.
absl::Status MakePrivateDir(const std::string& path);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_PRIVATE_DIR_H_
