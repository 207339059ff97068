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

// A name a manifest may give: no path separators, no dot files.
bool SafeName(const std::string& name) {
  return !name.empty() && name[0] != '.' && name.find('/') == std::string::npos;
}

absl::Status Damaged(const std::string& dir, const std::string& what) {
  return absl::DataLossError(absl::StrCat(dir, ": ", what,
                                          " (not a complete structd snapshot: use an intact "
                                          "copy, or take a new snapshot)"));
}

}  // namespace

absl::StatusOr<SnapshotWriter> SnapshotWriter::Create(std::string dir) {
  absl::StatusOr<base::NewDirectory> d = base::NewDirectory::Create(std::move(dir));
  if (!d.ok()) return d.status();
  return SnapshotWriter(std::move(*d));
}

absl::Status SnapshotWriter::Write(const client::AdminClient::SnapshotChunk& chunk) {
  absl::Status s = dir_.Write(chunk.file, chunk.file_size, chunk.offset, chunk.data);
  if (absl::IsInvalidArgument(s)) {
    return absl::InternalError(absl::StrCat("the daemon sent a file named '", chunk.file, "'"));
  }
  return s;
}

absl::Status SnapshotWriter::Finish() {
  if (!dir_.Has(kManifest)) {
    return absl::DataLossError(
        "the daemon's stream ended before the manifest (nothing was written; try again)");
  }
  return dir_.Finish();
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
