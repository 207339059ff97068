#include "structd/base/new_directory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace structd::base {
namespace {

std::string Errno() { return std::strerror(errno); }

absl::Status WriteAll(int fd, const char* p, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return absl::InternalError(absl::StrCat(path, ": ", Errno()));
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NewDirectory> NewDirectory::Create(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) &&
      !(std::filesystem::is_directory(dir, ec) && std::filesystem::is_empty(dir, ec))) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, " exists; give a new directory (a snapshot never overwrites files)"));
  }
  std::filesystem::path parent = std::filesystem::absolute(dir, ec).parent_path();
  if (!std::filesystem::is_directory(parent, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(parent.string(), " is not a directory"));
  }
  NewDirectory d;
  d.dir_ = dir;
  d.temp_ = absl::StrCat(dir, ".partial-", getpid());
  std::filesystem::remove_all(d.temp_, ec);
  if (mkdir(d.temp_.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("creating ", d.temp_, ": ", Errno()));
  }
  return d;
}

NewDirectory::NewDirectory(NewDirectory&& o) noexcept
    : dir_(std::move(o.dir_)),
      temp_(std::move(o.temp_)),
      files_(std::move(o.files_)),
      bytes_written_(o.bytes_written_),
      finished_(o.finished_) {
  o.finished_ = true;
}

NewDirectory::~NewDirectory() {
  if (finished_ || temp_.empty()) return;
  files_.clear();
  std::error_code ec;
  std::filesystem::remove_all(temp_, ec);
}

uint64_t NewDirectory::bytes_total() const {
  uint64_t total = 0;
  for (const auto& [name, f] : files_) total += f.size;
  return total;
}

absl::Status NewDirectory::Write(const std::string& name, uint64_t file_size, uint64_t offset,
                                 std::string_view data) {
  if (name.empty() || name[0] == '.' || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a plain file name"));
  }
  const std::string path = absl::StrCat(temp_, "/", name);
  File& f = files_[name];
  if (f.fd.get() < 0) {
    f.fd = UniqueFd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (f.fd.get() < 0) return absl::InternalError(absl::StrCat(path, ": ", Errno()));
  }
  f.size = file_size;
  bytes_written_ += data.size();
  return WriteAll(f.fd.get(), data.data(), data.size(), offset, path);
}

absl::Status NewDirectory::Finish() {
  for (auto& [name, f] : files_) {
    const std::string path = absl::StrCat(temp_, "/", name);
    if (ftruncate(f.fd.get(), static_cast<off_t>(f.size)) != 0 || fsync(f.fd.get()) != 0) {
      return absl::InternalError(absl::StrCat(path, ": ", Errno()));
    }
    f.fd = UniqueFd();
  }
  std::error_code ec;
  if (std::filesystem::is_directory(dir_, ec)) std::filesystem::remove(dir_, ec);  // empty
  if (rename(temp_.c_str(), dir_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("renaming ", temp_, " to ", dir_, ": ", Errno()));
  }
  std::string parent = std::filesystem::absolute(dir_, ec).parent_path().string();
  UniqueFd pfd(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (pfd.get() >= 0) fsync(pfd.get());
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace structd::base
