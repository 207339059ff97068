#include "structd/shm/arena_storage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/shm/format.h"

namespace structd::shm {

using base::ErrnoStatus;
using base::Fallocate;
using base::UniqueFd;

namespace {

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

bool IsNoSpace(int err) { return err == ENOSPC || err == EDQUOT || err == EFBIG || err == ENOMEM; }

std::string FileName(ArenaFile file) {
  return file.is_header() ? std::string(kArenaHeaderFile) : absl::StrCat("extent.", file.extent);
}

// Backs every page of `fd` up to `bytes`; ResourceExhausted when the
// memory is not there.
absl::Status Back(int fd, uint64_t bytes, const std::string& name, const std::string& where) {
  int err = Fallocate(fd, static_cast<off_t>(bytes));
  if (err == 0) return absl::OkStatus();
  if (IsNoSpace(err)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "arena: cannot back %s with %d bytes: %s (free space %s, or lower the channel's "
        "extent_size)",
        name, bytes, strerror(err), where));
  }
  return ErrnoStatus(err, "arena: back " + name);
}

class Directory final : public ArenaStorage {
 public:
  Directory(std::string dir, uint32_t mode) : dir_(std::move(dir)), mode_(mode) {}

  std::string label() const override { return dir_; }
  std::string Name(ArenaFile file) const override {
    return absl::StrCat(dir_, "/", FileName(file));
  }

  absl::StatusOr<UniqueFd> Open(ArenaFile file, Access access) const override {
    std::string path = Name(file);
    int flags = (access == Access::kReadWrite ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW;
    UniqueFd fd(open(path.c_str(), flags));
    if (fd) return fd;
    if (errno == ENOENT && file.is_header()) {
      return absl::NotFoundError(absl::StrCat(
          "arena: no arena in ", dir_, " (create one first, or check the path)"));
    }
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("arena: ", path, " does not exist"));
    return ErrnoStatus(errno, "arena: open " + path);
  }

  absl::StatusOr<PreparedFile> Prepare(ArenaFile file, uint64_t bytes) override {
    PreparedFile p;
    p.fd = UniqueFd(open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, mode_));
    if (!p.fd) {
      // No O_TMPFILE on this file system: a name nobody else would pick.
      uint64_t nonce = 0;
      if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) nonce = 0;
      std::string temp = absl::StrFormat("%s.tmp.%d.%016x", Name(file), getpid(), nonce);
      p.fd = UniqueFd(
          open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode_));
      if (!p.fd) return ErrnoStatus(errno, "arena: create " + temp);
      p.temp_name = std::move(temp);
    }
    fchmod(p.fd.get(), mode_);  // not narrowed by the umask
    if (absl::Status s = Back(p.fd.get(), bytes, Name(file),
                              "on the state directory's file system, or raise its size");
        !s.ok()) {
      return s;
    }
    return p;
  }

  absl::Status Publish(ArenaFile file, PreparedFile& p) override {
    std::string path = Name(file);
    // link(), not rename(): a file that exists is never replaced.
    int rc = p.temp_name.empty()
                 ? linkat(AT_FDCWD, absl::StrCat("/proc/self/fd/", p.fd.get()).c_str(), AT_FDCWD,
                          path.c_str(), AT_SYMLINK_FOLLOW)
                 : link(p.temp_name.c_str(), path.c_str());
    if (rc == 0) return absl::OkStatus();
    if (errno == EEXIST) return absl::AlreadyExistsError(absl::StrCat("arena: ", path, " exists"));
    return ErrnoStatus(errno, "arena: publish " + path);
  }

  std::vector<uint32_t> ExtentIds() const override {
    std::vector<uint32_t> ids;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
      std::string name = entry.path().filename().string();
      if (!name.starts_with("extent.") || name.size() == 7 || name.size() > 12) continue;
      uint64_t id = 0;
      bool digits = true;
      for (size_t i = 7; i < name.size(); ++i) {
        if (name[i] < '0' || name[i] > '9') digits = false;
        id = id * 10 + static_cast<uint64_t>(name[i] - '0');
      }
      if (digits && id < kMaxExtents) ids.push_back(static_cast<uint32_t>(id));
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  bool sizes_sealed() const override { return false; }

  std::optional<FileSize> Size(ArenaFile file) const override {
    struct stat st;
    if (lstat(Name(file).c_str(), &st) != 0) return std::nullopt;
    return FileSize{static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_blocks) * 512};
  }

  // The arena's files only (the directory too, once empty): whatever else
  // the caller keeps there stays.
  void RemoveAll() override {
    for (uint32_t id : ExtentIds()) unlink(Name(ArenaFile{static_cast<int32_t>(id)}).c_str());
    unlink(Name(ArenaFile{}).c_str());
    rmdir(dir_.c_str());
  }

 private:
  const std::string dir_;
  const uint32_t mode_;
};

}  // namespace

PreparedFile::~PreparedFile() {
  if (!temp_name.empty()) unlink(temp_name.c_str());
}

std::unique_ptr<ArenaStorage> DirectoryStorage(std::string dir, uint32_t file_mode) {
  return std::make_unique<Directory>(std::move(dir), file_mode);
}

SealedMemoryStorage::SealedMemoryStorage(std::string label, Keeper keeper,
                                         std::map<ArenaFile, UniqueFd> kept)
    : label_(std::move(label)), keeper_(std::move(keeper)) {
  for (auto& [file, fd] : kept) {
    int seals = fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0 || (seals & kSeals) != kSeals) {
      // Not a memfd this storage sealed: a keeper mix-up, never used.
      check_ = absl::DataLossError(absl::StrFormat(
          "arena %s: the kept descriptor of %s is not a sealed memfd (seals %d); it was left "
          "out, so that file reads as missing",
          label_, FileName(file), seals));
      // Out of the keeper too, before a new file takes its name.
      if (keeper_.forget) keeper_.forget(file);
      continue;
    }
    files_.emplace(file, std::move(fd));
  }
}

std::string SealedMemoryStorage::Name(ArenaFile file) const {
  return absl::StrCat("memfd:", label_, "/", FileName(file));
}

absl::StatusOr<UniqueFd> SealedMemoryStorage::Open(ArenaFile file, Access access) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(file);
  if (it == files_.end()) {
    if (file.is_header()) {
      return absl::NotFoundError(absl::StrCat("arena: no arena in ", Name(file)));
    }
    return absl::NotFoundError(absl::StrCat("arena: ", Name(file), " does not exist"));
  }
  // A new open file description, never a dup: a dup would share file
  // status flags with whoever else holds one (a member setting O_APPEND on
  // its descriptor would turn the owner's repairs into appends, which the
  // seals refuse). Reopening a memfd through /proc keeps its seals.
  int flags = (access == Access::kReadWrite ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  UniqueFd fd(open(absl::StrCat("/proc/self/fd/", it->second.get()).c_str(), flags));
  if (!fd) {
    return ErrnoStatus(errno, absl::StrCat("arena: reopen ", Name(file),
                                           " through /proc/self/fd (is /proc mounted?)"));
  }
  return fd;
}

absl::StatusOr<PreparedFile> SealedMemoryStorage::Prepare(ArenaFile file, uint64_t bytes) {
  PreparedFile p;
  std::string name = absl::StrCat("structd:", label_, "/", FileName(file));
  p.fd = UniqueFd(memfd_create(name.substr(0, 249).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!p.fd) return ErrnoStatus(errno, "arena: memfd_create " + Name(file));
  if (ftruncate(p.fd.get(), static_cast<off_t>(bytes)) != 0) {
    return ErrnoStatus(errno, "arena: size " + Name(file));
  }
  if (absl::Status s = Back(p.fd.get(), bytes, Name(file), "in memory (shmem)"); !s.ok()) return s;
  return p;
}

absl::Status SealedMemoryStorage::Publish(ArenaFile file, PreparedFile& p) {
  if (fcntl(p.fd.get(), F_ADD_SEALS, kSeals) != 0) {
    return ErrnoStatus(errno, "arena: seal " + Name(file));
  }
  UniqueFd kept(fcntl(p.fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!kept) return ErrnoStatus(errno, "arena: dup " + Name(file));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (files_.count(file)) {
      return absl::AlreadyExistsError(absl::StrCat("arena: ", Name(file), " exists"));
    }
    files_.emplace(file, std::move(kept));
  }
  // Outside the lock (a message to systemd), with the caller's descriptor
  // of the same file, open for the whole call.
  if (keeper_.keep) keeper_.keep(file, p.fd.get());
  return absl::OkStatus();
}

std::vector<uint32_t> SealedMemoryStorage::ExtentIds() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint32_t> ids;
  for (const auto& [file, fd] : files_) {
    if (!file.is_header()) ids.push_back(static_cast<uint32_t>(file.extent));
  }
  return ids;  // the map is ordered by extent id
}

std::optional<FileSize> SealedMemoryStorage::Size(ArenaFile file) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(file);
  struct stat st;
  if (it == files_.end() || fstat(it->second.get(), &st) != 0) return std::nullopt;
  return FileSize{static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_blocks) * 512};
}

void SealedMemoryStorage::RemoveAll() {
  std::map<ArenaFile, UniqueFd> files;
  {
    std::lock_guard<std::mutex> lock(mu_);
    files.swap(files_);
  }
  for (const auto& [file, fd] : files) {
    if (keeper_.forget) keeper_.forget(file);
  }
}

}  // namespace structd::shm
