#include "core/private_dir.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace structd::server {

absl::Status MakePrivateDir(const std::string& path) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    std::string prefix = path.substr(0, slash);
    if (!prefix.empty() && mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot create directory ", prefix, ": ", strerror(errno),
          " (choose a writable --state-dir)"));
    }
    if (slash == std::string::npos) break;
  }
  if (chmod(path.c_str(), 0700) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot make ", path, " private (0700): ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace structd::server
