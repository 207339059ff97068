#include "structd/base/trusted_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/base/posix.h"

namespace structd::base {
namespace {

absl::Status Untrusted(const std::string& path, const std::string& why, const std::string& fix) {
  return absl::PermissionDeniedError(absl::StrCat(
      path, ": ", why, "; another user could replace what lies below it (", fix, ")"));
}

// Splits an absolute path into its components.
std::vector<std::string> Components(const std::string& path) {
  std::vector<std::string> out;
  size_t at = 1;
  while (at <= path.size()) {
    size_t slash = path.find('/', at);
    if (slash == std::string::npos) slash = path.size();
    if (slash > at) out.push_back(path.substr(at, slash - at));
    at = slash + 1;
  }
  return out;
}

}  // namespace

absl::Status CheckTrustedPath(const std::string& dir, const std::set<uid_t>& trusted_in,
                              const std::string& fix) {
  if (dir.empty() || dir[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' is not an absolute path"));
  }
  std::set<uid_t> trusted = trusted_in;
  trusted.insert(0);
  // Components still to walk, in order (a symlink's target is spliced in).
  std::vector<std::string> todo = Components(dir);
  std::reverse(todo.begin(), todo.end());
  std::string at = "";
  int links = 0;
  struct stat st;
  if (stat("/", &st) != 0) return ErrnoStatus(errno, "stat /");
  while (!todo.empty()) {
    std::string name = todo.back();
    todo.pop_back();
    if (name == "." ) continue;
    if (name == "..") {
      size_t slash = at.rfind('/');
      at = slash == std::string::npos ? "" : at.substr(0, slash);
      continue;
    }
    std::string path = at + "/" + name;
    if (lstat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
    if (!trusted.count(st.st_uid)) {
      return Untrusted(path, absl::StrFormat("owned by uid %d, which is not trusted here",
                                             st.st_uid),
                       fix);
    }
    if (S_ISLNK(st.st_mode)) {
      if (++links > 40) return Untrusted(path, "too many symlinks", fix);
      char target[PATH_MAX];
      ssize_t n = readlink(path.c_str(), target, sizeof target - 1);
      if (n < 0) return ErrnoStatus(errno, "readlink " + path);
      std::string t(target, static_cast<size_t>(n));
      std::vector<std::string> more = Components(t);
      if (!t.empty() && t[0] == '/') at = "";
      for (auto it = more.rbegin(); it != more.rend(); ++it) todo.push_back(*it);
      continue;
    }
    if (!S_ISDIR(st.st_mode)) return Untrusted(path, "not a directory", fix);
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
      return Untrusted(path,
                       absl::StrFormat("writable by group or others (mode %04o) and not sticky",
                                       st.st_mode & 07777),
                       fix);
    }
    at = path;
  }
  return absl::OkStatus();
}

}  // namespace structd::base
