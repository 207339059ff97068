#include "client/structctl/snapshot_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <toml++/toml.h>

#include "absl/strings/str_cat.h"

namespace structd::structctl {
namespace {

constexpr size_t kChunkBytes = 1 << 20;
constexpr const char* kManifest = "manifest.toml";

std::string Errno() { return std::strerror(errno); }

// A name the daemon may send: no path separators, no dot files.
bool SafeName(const std::string& name) {
  return !name.empty() && name[0] != '.' && name.find('/') == std::string::npos;
}

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

absl::Status Damaged(const std::string& dir, const std::string& what) {
  return absl::DataLossError(absl::StrCat(dir, ": ", what,
                                          " (not a complete structd snapshot: use an intact "
                                          "copy, or take a new snapshot)"));
}

}  // namespace

absl::StatusOr<SnapshotWriter> SnapshotWriter::Create(std::string dir) {
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
  SnapshotWriter w;
  w.dir_ = dir;
  w.temp_ = absl::StrCat(dir, ".partial-", getpid());
  std::filesystem::remove_all(w.temp_, ec);
  if (mkdir(w.temp_.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("creating ", w.temp_, ": ", Errno()));
  }
  return w;
}

SnapshotWriter::~SnapshotWriter() {
  if (finished_ || temp_.empty()) return;
  files_.clear();
  std::error_code ec;
  std::filesystem::remove_all(temp_, ec);
}

uint64_t SnapshotWriter::bytes_total() const {
  uint64_t total = 0;
  for (const auto& [name, f] : files_) total += f.size;
  return total;
}

absl::Status SnapshotWriter::Write(const client::AdminClient::SnapshotChunk& chunk) {
  if (!SafeName(chunk.file)) {
    return absl::InternalError(absl::StrCat("the daemon sent a file named '", chunk.file, "'"));
  }
  const std::string path = absl::StrCat(temp_, "/", chunk.file);
  File& f = files_[chunk.file];
  if (f.fd.get() < 0) {
    f.fd = base::UniqueFd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (f.fd.get() < 0) return absl::InternalError(absl::StrCat(path, ": ", Errno()));
  }
  f.size = chunk.file_size;
  bytes_received_ += chunk.data.size();
  return WriteAll(f.fd.get(), chunk.data.data(), chunk.data.size(), chunk.offset, path);
}

absl::Status SnapshotWriter::Finish() {
  if (!files_.count(kManifest)) {
    return absl::DataLossError(
        "the daemon's stream ended before the manifest (nothing was written; try again)");
  }
  for (auto& [name, f] : files_) {
    const std::string path = absl::StrCat(temp_, "/", name);
    if (ftruncate(f.fd.get(), static_cast<off_t>(f.size)) != 0 || fsync(f.fd.get()) != 0) {
      return absl::InternalError(absl::StrCat(path, ": ", Errno()));
    }
  }
  files_.clear();
  std::error_code ec;
  if (std::filesystem::is_directory(dir_, ec)) std::filesystem::remove(dir_, ec);  // empty
  if (rename(temp_.c_str(), dir_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("renaming ", temp_, " to ", dir_, ": ", Errno()));
  }
  std::string parent = std::filesystem::absolute(dir_, ec).parent_path().string();
  base::UniqueFd pfd(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (pfd.get() >= 0) fsync(pfd.get());
  finished_ = true;
  return absl::OkStatus();
}

absl::StatusOr<SnapshotReader> SnapshotReader::Open(const std::string& dir) {
  SnapshotReader r;
  r.dir_ = dir;
  const std::string path = absl::StrCat(dir, "/", kManifest);
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    return Damaged(dir, errno == ENOENT ? "no manifest.toml (a snapshot that did not finish, "
                                          "or not a snapshot directory)"
                                        : absl::StrCat("manifest.toml: ", Errno()));
  }
  char buf[1 << 16];
  for (ssize_t n; (n = read(fd.get(), buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(absl::StrCat(path, ": ", Errno()));
    r.manifest_.append(buf, static_cast<size_t>(n));
    if (r.manifest_.size() > (16u << 20)) return Damaged(dir, "manifest.toml is too large");
  }
  // The daemon checks the manifest; here only what reading the files needs.
  toml::table t;
  try {
    t = toml::parse(r.manifest_, std::string_view(path));
  } catch (const toml::parse_error& e) {
    return Damaged(dir, absl::StrCat("manifest.toml is not valid TOML: ",
                                     std::string(e.description())));
  }
  r.channel_name_ = t["channel_name"].value_or(std::string());
  if (const toml::array* files = t["files"].as_array()) {
    for (const toml::node& node : *files) {
      const toml::table* f = node.as_table();
      if (f == nullptr) continue;
      File file{(*f)["name"].value_or(std::string()),
                static_cast<uint64_t>((*f)["bytes"].value_or(int64_t{-1}))};
      if (!SafeName(file.name) || file.name == kManifest) {
        return Damaged(dir, absl::StrCat("manifest.toml names a file '", file.name, "'"));
      }
      struct stat st;
      const std::string fpath = absl::StrCat(dir, "/", file.name);
      if (stat(fpath.c_str(), &st) != 0) {
        return Damaged(dir, absl::StrCat(file.name, " is missing"));
      }
      if (static_cast<uint64_t>(st.st_size) != file.size) {
        return Damaged(dir, absl::StrCat(file.name, " is ", st.st_size,
                                         " bytes; the manifest says ", file.size));
      }
      r.files_.push_back(std::move(file));
    }
  }
  if (r.files_.empty()) return Damaged(dir, "manifest.toml names no files");
  return r;
}

uint64_t SnapshotReader::bytes_total() const {
  uint64_t total = 0;
  for (const File& f : files_) total += f.size;
  return total;
}

absl::StatusOr<bool> SnapshotReader::Next(client::AdminClient::SnapshotChunk& chunk) {
  while (file_ < files_.size()) {
    const File& f = files_[file_];
    const std::string path = absl::StrCat(dir_, "/", f.name);
    if (fd_.get() < 0) {
      fd_ = base::UniqueFd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (fd_.get() < 0) return absl::InternalError(absl::StrCat(path, ": ", Errno()));
      offset_ = 0;
    }
    if (offset_ >= f.size) {
      fd_ = base::UniqueFd();
      ++file_;
      continue;
    }
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, f.size - offset_));
    chunk.file = f.name;
    chunk.offset = offset_;
    chunk.data.resize(want);
    size_t got = 0;
    while (got < want) {
      ssize_t n = pread(fd_.get(), chunk.data.data() + got, want - got,
                        static_cast<off_t>(offset_ + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return Damaged(dir_, absl::StrCat(f.name, " became shorter while it was read"));
      }
      got += static_cast<size_t>(n);
    }
    offset_ += want;
    if (chunk.data.find_first_not_of('\0') == std::string::npos) continue;  // zeros: implied
    return true;
  }
  return false;
}

}  // namespace structd::structctl
