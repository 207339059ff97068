#ifndef STRUCTD_SERVER_CORE_PRIVATE_DIR_H_
#define STRUCTD_SERVER_CORE_PRIVATE_DIR_H_

#include <string>

#include "absl/status/status.h"

namespace structd::server {

// Creates `path` and any missing parents as directories of mode 0700, and
// makes `path` itself 0700 if it existed. The daemon's state is readable
// by its own uid only (doc/operations.md).
absl::Status MakePrivateDir(const std::string& path);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_PRIVATE_DIR_H_
