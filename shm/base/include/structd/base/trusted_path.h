#ifndef STRUCTD_BASE_TRUSTED_PATH_H_
#define STRUCTD_BASE_TRUSTED_PATH_H_

// Whether anyone but a set of trusted uids could change what a path names:
// the one rule the daemon applies to its state and socket directories and
// clients apply to the daemon's socket (doc/security.md, "Safe runtime
// directory and files").

#include <sys/types.h>

#include <set>
#include <string>

#include "absl/status/status.h"

namespace structd::base {

// OK if every directory from "/" down to and including `dir` (absolute)
// belongs to a uid in `trusted` and is not writable by group or others
// unless sticky, and every symlink on the way belongs to a trusted uid
// (checked with lstat, the link itself; its target is then checked the
// same way). Root is always trusted. PermissionDenied naming the first
// component that fails, its owner and `fix`; NotFound if a component is
// missing.
absl::Status CheckTrustedPath(const std::string& dir, const std::set<uid_t>& trusted,
                              const std::string& fix);

}  // namespace structd::base

#endif  // STRUCTD_BASE_TRUSTED_PATH_H_
