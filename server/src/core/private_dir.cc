#include "core/private_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/base/posix.h"

namespace structd::server {
namespace {

absl::Status Refuse(const std::string& dir, const std::string& why) {
  return absl::PermissionDeniedError(absl::StrCat(
      dir, ": ", why,
      "; another user could replace what the daemon keeps there (remove or fix it as root, "
      "or choose another --state-dir / --socket)"));
}

// An ancestor is safe if only root or we can change its entries.
absl::Status CheckAncestor(const std::string& dir, const struct stat& st) {
  if (!S_ISDIR(st.st_mode)) return Refuse(dir, "not a directory");
  if (st.st_uid != 0 && st.st_uid != geteuid()) {
    return Refuse(dir, absl::StrFormat("owned by uid %d, neither root nor the daemon's uid %d",
                                       st.st_uid, geteuid()));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return Refuse(dir, absl::StrFormat("writable by group or others (mode %04o) and not sticky",
                                       st.st_mode & 07777));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MakeSafeDir(const std::string& path, mode_t mode, gid_t gid) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("directory '", path, "' is not an absolute path (use one)"));
  }
  // Walk down from "/", creating what is missing, checking what exists.
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    std::string prefix = path.substr(0, slash);
    bool last = slash == std::string::npos || slash == path.size() - 1;
    if (!prefix.empty() && mkdir(prefix.c_str(), last ? 0700 : 0755) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(absl::StrCat("cannot create directory ", prefix, ": ",
                                                      strerror(errno),
                                                      " (choose a writable --state-dir)"));
    }
    if (last) break;
    struct stat st;
    if (lstat(prefix.c_str(), &st) != 0) return base::ErrnoStatus(errno, "stat " + prefix);
    if (S_ISLNK(st.st_mode)) {
      // A symlink an administrator made (/var/run -> /run) is fine when
      // only root or we could have made it, which its directory's check
      // decides; follow it for the ownership check.
      if (stat(prefix.c_str(), &st) != 0) return base::ErrnoStatus(errno, "stat " + prefix);
    }
    if (absl::Status s = CheckAncestor(prefix, st); !s.ok()) return s;
  }
  std::string dir = path;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  base::UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP || errno == ENOTDIR) return Refuse(dir, "a symlink or not a directory");
    return base::ErrnoStatus(errno, "open " + dir);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return base::ErrnoStatus(errno, "stat " + dir);
  if (st.st_uid != geteuid()) {
    return Refuse(dir, absl::StrFormat("owned by uid %d, not by the daemon's uid %d", st.st_uid,
                                       geteuid()));
  }
  if (gid != static_cast<gid_t>(-1) && st.st_gid != gid && fchown(fd.get(), -1, gid) != 0) {
    return base::ErrnoStatus(errno, absl::StrFormat("chgrp %d %s", gid, dir));
  }
  if ((st.st_mode & 07777) != mode && fchmod(fd.get(), mode) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat("cannot make %s mode %04o: %s", dir, mode,
                                                       strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status MakeSocketDir(const std::string& path, mode_t mode, gid_t gid) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return base::ErrnoStatus(errno, "stat " + path);
    return MakeSafeDir(path, mode, gid);
  }
  // Existing: its ancestors and itself by the ancestor rule.
  std::string probe = path;
  while (probe.size() > 1 && probe.back() == '/') probe.pop_back();
  for (size_t slash = probe.find('/', 1);; slash = probe.find('/', slash + 1)) {
    std::string prefix = probe.substr(0, slash);
    if (stat(prefix.c_str(), &st) != 0) return base::ErrnoStatus(errno, "stat " + prefix);
    if (absl::Status s = CheckAncestor(prefix, st); !s.ok()) return s;
    if (slash == std::string::npos) break;
  }
  return absl::OkStatus();
}

absl::Status MakePrivateDir(const std::string& path) { return MakeSafeDir(path, 0700); }

}  // namespace structd::server
