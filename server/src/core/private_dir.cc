#include "core/private_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/base/posix.h"
#include "structd/base/trusted_path.h"

namespace structd::server {
namespace {

constexpr char kFix[] =
    "remove or fix it as root, or choose another --state-dir / --socket";

// The longest prefix of `path` that exists (lstat), "/" at least.
std::string ExistingPrefix(const std::string& path) {
  std::string prefix = path;
  struct stat st;
  while (prefix.size() > 1 && lstat(prefix.c_str(), &st) != 0) {
    size_t slash = prefix.rfind('/');
    prefix = slash == 0 ? "/" : prefix.substr(0, slash);
  }
  return prefix;
}

}  // namespace

absl::Status MakeSafeDir(const std::string& given, mode_t mode, gid_t gid) {
  if (given.empty()) return absl::InvalidArgumentError("an empty directory name");
  std::string dir = std::filesystem::absolute(given).lexically_normal().string();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::set<uid_t> trusted{geteuid()};
  // What exists already must be ours or root's before anything is made
  // under it (a squatted /tmp/structd-UID, a planted symlink).
  if (absl::Status s = base::CheckTrustedPath(ExistingPrefix(dir), trusted, kFix); !s.ok()) {
    return s;
  }
  for (size_t slash = dir.find('/', 1);; slash = dir.find('/', slash + 1)) {
    std::string prefix = dir.substr(0, slash);
    bool last = slash == std::string::npos;
    if (mkdir(prefix.c_str(), last ? 0700 : 0755) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(absl::StrCat("cannot create directory ", prefix, ": ",
                                                      strerror(errno),
                                                      " (choose a writable --state-dir)"));
    }
    if (last) break;
  }
  // Again, now that it is complete: nothing was swapped in meanwhile.
  if (absl::Status s = base::CheckTrustedPath(dir, trusted, kFix); !s.ok()) return s;
  base::UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP || errno == ENOTDIR) {
      return absl::PermissionDeniedError(
          absl::StrCat(dir, ": a symlink or not a directory (", kFix, ")"));
    }
    return base::ErrnoStatus(errno, "open " + dir);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return base::ErrnoStatus(errno, "stat " + dir);
  if (st.st_uid != geteuid()) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s: owned by uid %d, not by the daemon's uid %d; another user could replace what "
        "the daemon keeps there (%s)",
        dir, st.st_uid, geteuid(), kFix));
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

absl::Status MakeSocketDir(const std::string& given, mode_t mode, gid_t gid) {
  std::string path = std::filesystem::absolute(given.empty() ? "." : given).lexically_normal();
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return base::ErrnoStatus(errno, "stat " + path);
    return MakeSafeDir(path, mode, gid);
  }
  // Existing (an administrator's /run/structd, a test's directory): left
  // as it is, but nobody else may control it or anything above it.
  return base::CheckTrustedPath(path, {geteuid()}, kFix);
}

absl::Status MakePrivateDir(const std::string& path) { return MakeSafeDir(path, 0700); }

}  // namespace structd::server
