#include "structd/shm/arena.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "slab_view.h"
#include "structd/base/posix.h"

namespace structd::shm {
namespace {

using base::ErrnoStatus;
using base::Fallocate;
using base::UniqueFd;

constexpr const char* kHeaderFile = kArenaHeaderFile;
// Tag of the header's mapping in the SIGBUS registry (extents use their id).
constexpr uint64_t kHeaderTag = 0xFFFFFFFFu;

bool IsNoSpace(int err) {
  return err == ENOSPC || err == EDQUOT || err == EFBIG;
}

}  // namespace

absl::Status ValidateArenaOptions(const ArenaOptions& o) {
  if (o.extent_size < kMinExtentSize || o.extent_size > kMaxExtentSize ||
      o.extent_size % kSlabSize != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arena: extent_size %d is invalid (use a multiple of %d between %d "
        "and %d bytes)",
        o.extent_size, kSlabSize, kMinExtentSize, kMaxExtentSize));
  }
  if (o.max_extents == 0 || o.max_extents > kMaxExtents) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arena: max_extents %d is invalid (use 1 to %d)", o.max_extents,
        kMaxExtents));
  }
  if (o.initial_extents > o.max_extents) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arena: initial_extents %d exceeds max_extents %d (lower it)",
        o.initial_extents, o.max_extents));
  }
  return absl::OkStatus();
}

Arena::Arena(std::string dir, Access access, int header_fd,
             ArenaHeader* header, uint64_t extent_size, uint32_t max_extents,
             uint64_t epoch)
    : dir_(std::move(dir)),
      source_(DirSource(dir_, access)),
      access_(access),
      header_fd_(header_fd),
      header_(header) {
  // Validated copies, never re-read from shared memory.
  extent_size_ = extent_size;
  max_extents_ = max_extents;
  epoch_ = epoch;
  maps_ = std::make_unique<std::atomic<uint8_t*>[]>(max_extents_);
  for (uint32_t i = 0; i < max_extents_; ++i) maps_[i].store(nullptr);
  guards_ = std::make_unique<GuardedMapping[]>(max_extents_);
  header_guard_ = GuardedMapping(header_, sizeof(ArenaHeader), &damage_, kHeaderTag);
}

Arena::~Arena() {
  for (uint32_t i = 0; i < max_extents_; ++i) {
    guards_[i] = GuardedMapping();
    if (uint8_t* p = maps_[i].load()) munmap(p, extent_size_);
  }
  header_guard_ = GuardedMapping();
  munmap(header_, sizeof(ArenaHeader));
  close(header_fd_);
}

absl::Status Arena::Intact() const {
  if (!damage_.damaged()) return absl::OkStatus();
  uint64_t tag = damage_.tag();
  std::string file = tag == kHeaderTag ? absl::StrCat(dir_, "/", kHeaderFile)
                                       : ExtentPath(static_cast<uint32_t>(tag));
  return absl::DataLossError(absl::StrCat(
      "arena ", dir_, ": ", file,
      " was truncated or replaced while mapped (a process holding its descriptor, a "
      "member, or one of the daemon's uid did it); this arena is damaged: restart the "
      "daemon to repair it (the lost pages come back as zeros), or drop the channel"));
}

std::vector<Arena::SizeRepair> Arena::RestoreFileSizes() {
  std::vector<SizeRepair> repairs;
  if (access_ != Access::kReadWrite) return repairs;
  // False once the file does not exist. A stat by path per file (the
  // common case); the file is opened only to repair it.
  auto check = [&](int32_t extent, uint64_t size) {
    std::string path = extent == ArenaFile::kHeader
                           ? absl::StrCat(dir_, "/", kHeaderFile)
                           : ExtentPath(static_cast<uint32_t>(extent));
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return errno != ENOENT;
    uint64_t found = static_cast<uint64_t>(st.st_size);
    uint64_t allocated = static_cast<uint64_t>(st.st_blocks) * 512;
    // Backed fully by Fallocate, so up to `size` (plus a page of slack for
    // file systems that round up) is expected.
    if (found == size && allocated <= size + 4096) return true;
    absl::StatusOr<UniqueFd> fd = source_(ArenaFile{extent});
    if (!fd.ok()) return true;
    SizeRepair r{extent, found, allocated, found < size};
    if (found < size) {
      // Restore first, so other mappings stop faulting; then back it.
      if (ftruncate(fd->get(), static_cast<off_t>(size)) == 0) {
        (void)Fallocate(fd->get(), static_cast<off_t>(size));
      }
      uint64_t tag = extent == ArenaFile::kHeader ? kHeaderTag : static_cast<uint64_t>(extent);
      uint64_t none = 0;
      damage_.first_tag_plus_one.compare_exchange_strong(none, tag + 1);
    } else {
      // Past the size: grow by a page, then shrink back, which frees every
      // page from `size` on (the mapped range ends there).
      bool grown = found != size || ftruncate(fd->get(), static_cast<off_t>(size + 4096)) == 0;
      if (!grown || ftruncate(fd->get(), static_cast<off_t>(size)) != 0) return true;
    }
    repairs.push_back(r);
    return true;
  };
  check(ArenaFile::kHeader, sizeof(ArenaHeader));
  // Every extent file, not just the published count (shared memory that a
  // member could lower to hide one): files exist from 0 without a gap.
  for (uint32_t id = 0; id < max_extents_; ++id) {
    if (!check(static_cast<int32_t>(id), extent_size_)) break;
  }
  return repairs;
}

std::string Arena::ExtentPath(const std::string& dir, uint32_t extent_id) {
  return absl::StrCat(dir, "/extent.", extent_id);
}

std::string Arena::ExtentPath(uint32_t extent_id) const { return ExtentPath(dir_, extent_id); }

absl::StatusOr<std::unique_ptr<Arena>> Arena::Create(
    const std::string& dir, const ArenaOptions& options) {
  if (absl::Status s = ValidateArenaOptions(options); !s.ok()) return s;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat(
        "arena: cannot create directory ", dir, ": ", ec.message(),
        " (check the state directory's permissions)"));
  }
  std::string final_path = absl::StrCat(dir, "/", kHeaderFile);
  if (::access(final_path.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "arena: ", dir, " already holds an arena (open it instead, or "
        "remove the directory)"));
  }
  // Build the header in a temporary file and link it into place, so an
  // opener sees either no arena or a complete header.
  std::string tmp_path =
      absl::StrCat(dir, "/", kHeaderFile, ".tmp.", getpid());
  unlink(tmp_path.c_str());  // a leftover of a creator with our pid
  UniqueFd fd(open(tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                   options.file_mode));
  if (!fd) return ErrnoStatus(errno, "arena: create " + tmp_path);
  if (int err = Fallocate(fd.get(), sizeof(ArenaHeader)); err != 0) {
    unlink(tmp_path.c_str());
    if (IsNoSpace(err)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "arena: no space for the header in ", dir, ": ", strerror(err),
          " (free space on that file system)"));
    }
    return ErrnoStatus(err, "arena: allocate " + tmp_path);
  }
  void* p = mmap(nullptr, sizeof(ArenaHeader), PROT_READ | PROT_WRITE,
                 MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) {
    int err = errno;
    unlink(tmp_path.c_str());
    return ErrnoStatus(err, "arena: map " + tmp_path);
  }
  auto* h = static_cast<ArenaHeader*>(p);
  h->magic = kArenaMagic;
  h->format_version = kFormatVersion;
  h->header_size = sizeof(ArenaHeader);
  uint64_t epoch = 0;
  while (epoch == 0) {
    if (getrandom(&epoch, sizeof(epoch), 0) != sizeof(epoch)) epoch = 0;
  }
  h->epoch = epoch;
  h->extent_size = options.extent_size;
  h->max_extents = options.max_extents;
  h->extent_count.store(0, std::memory_order_relaxed);
  h->created_unix_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  h->owner_generation.store(1, std::memory_order_relaxed);
  if (link(tmp_path.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    munmap(p, sizeof(ArenaHeader));
    unlink(tmp_path.c_str());
    if (err == EEXIST) {
      return absl::AlreadyExistsError(absl::StrCat(
          "arena: ", dir, " already holds an arena (open it instead)"));
    }
    return ErrnoStatus(err, "arena: publish " + final_path);
  }
  unlink(tmp_path.c_str());
  std::unique_ptr<Arena> arena(new Arena(dir, Access::kReadWrite, fd.release(),
                                         h, options.extent_size,
                                         options.max_extents, epoch));
  for (uint32_t i = 0; i < options.initial_extents; ++i) {
    absl::StatusOr<uint32_t> id = arena->Grow();
    if (!id.ok()) {
      // Leave nothing behind: a retry must be able to create the arena.
      arena.reset();
      for (uint32_t j = 0; j <= i; ++j) {
        unlink(absl::StrCat(dir, "/extent.", j).c_str());
      }
      unlink(final_path.c_str());
      return id.status();
    }
  }
  return arena;
}

ArenaFileSource Arena::DirSource(const std::string& dir, Access access) {
  return [dir, access](ArenaFile file) { return OpenFile(dir, file, access); };
}

absl::StatusOr<UniqueFd> Arena::OpenFile(const std::string& dir, ArenaFile file,
                                         Access access) {
  std::string path = file.extent == ArenaFile::kHeader
                         ? absl::StrCat(dir, "/", kHeaderFile)
                         : ExtentPath(dir, static_cast<uint32_t>(file.extent));
  int flags = (access == Access::kReadWrite ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW;
  UniqueFd fd(open(path.c_str(), flags));
  if (!fd) {
    if (errno == ENOENT && file.extent == ArenaFile::kHeader) {
      return absl::NotFoundError(absl::StrCat(
          "arena: no arena in ", dir, " (create one first, or check the path)"));
    }
    return ErrnoStatus(errno, "arena: open " + path);
  }
  return fd;
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Open(const std::string& dir,
                                                   Access access) {
  return OpenFrom(DirSource(dir, access), dir, access);
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::OpenFrom(ArenaFileSource source,
                                                       std::string label, Access access) {
  const std::string& dir = label;
  std::string path = absl::StrCat(dir, "/", kHeaderFile);
  absl::StatusOr<UniqueFd> opened = source(ArenaFile{});
  if (!opened.ok()) return opened.status();
  UniqueFd fd = std::move(*opened);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "arena: stat " + path);
  if (st.st_size < static_cast<off_t>(sizeof(ArenaHeader))) {
    return absl::DataLossError(absl::StrFormat(
        "arena: %s is %d bytes, too short for a header (the arena is damaged; "
        "restore it or create a new one)",
        path, st.st_size));
  }
  int prot = PROT_READ | (access == Access::kReadWrite ? PROT_WRITE : 0);
  void* p = mmap(nullptr, sizeof(ArenaHeader), prot, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "arena: map " + path);
  auto* h = static_cast<ArenaHeader*>(p);
  auto fail = [&](absl::Status s) {
    munmap(p, sizeof(ArenaHeader));
    return s;
  };
  if (h->magic != kArenaMagic) {
    return fail(absl::DataLossError(absl::StrCat(
        "arena: ", path, " is not a structd arena (bad magic; point at an "
        "arena directory)")));
  }
  if (h->format_version != kFormatVersion) {
    return fail(absl::FailedPreconditionError(absl::StrFormat(
        "arena: %s is arena format %d, this build reads format %d (use a "
        "structd built for format %d, or recreate the arena)",
        path, h->format_version, kFormatVersion, h->format_version)));
  }
  uint64_t es = h->extent_size;
  uint32_t me = h->max_extents;
  uint64_t epoch = h->epoch;
  if (h->header_size != sizeof(ArenaHeader) || es < kMinExtentSize ||
      es > kMaxExtentSize || es % kSlabSize != 0 || me == 0 ||
      me > kMaxExtents) {
    return fail(absl::DataLossError(absl::StrFormat(
        "arena: %s has a damaged header (extent_size %d, max_extents %d, "
        "extent_count %d); restore it or create a new arena",
        path, es, me, h->extent_count.load())));
  }
  std::unique_ptr<Arena> arena(new Arena(dir, access, fd.release(), h, es, me, epoch));
  arena->source_ = std::move(source);
  return arena;
}

namespace {

// An unnamed file in `dir` (O_TMPFILE), or, where the file system lacks
// it, a uniquely named one; `linkable` is what link() needs to name it.
struct NewFile {
  UniqueFd fd;
  std::string linkable;  // /proc/self/fd/N, or the temporary name
  bool named = false;    // the temporary name must be unlinked
};

absl::StatusOr<NewFile> CreateUnnamedFile(const std::string& dir, const std::string& hint) {
  NewFile f;
  f.fd = UniqueFd(open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (f.fd) {
    f.linkable = absl::StrCat("/proc/self/fd/", f.fd.get());
    return f;
  }
  uint64_t nonce = 0;
  if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) nonce = 0;
  f.linkable = absl::StrFormat("%s.tmp.%d.%016x", hint, getpid(), nonce);
  f.fd = UniqueFd(open(f.linkable.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                       0600));
  if (!f.fd) return ErrnoStatus(errno, "arena: create " + f.linkable);
  f.named = true;
  return f;
}

// Names `f` `path`; EEXIST if that name exists (it is never replaced).
int LinkInto(const NewFile& f, const std::string& path) {
  int rc = f.named ? link(f.linkable.c_str(), path.c_str())
                   : linkat(AT_FDCWD, f.linkable.c_str(), AT_FDCWD, path.c_str(),
                            AT_SYMLINK_FOLLOW);
  return rc == 0 ? 0 : errno;
}

}  // namespace

absl::Status Arena::CreateExtent(uint32_t id) {
  std::string final_path = ExtentPath(id);
  absl::StatusOr<NewFile> file = CreateUnnamedFile(dir_, final_path);
  if (!file.ok()) return file.status();
  auto drop_name = [&] {
    if (file->named) unlink(file->linkable.c_str());
  };
  int fd = file->fd.get();
  // Copy the header file's mode so clients that may open the arena may
  // open its extents.
  struct stat st;
  if (fstat(header_fd_, &st) == 0) fchmod(fd, st.st_mode & 07777);
  // Back every page now: a full tmpfs fails here, never with SIGBUS later.
  if (int err = Fallocate(fd, static_cast<off_t>(extent_size_)); err != 0) {
    drop_name();
    if (IsNoSpace(err)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "arena %s: cannot back extent %d of %d bytes: %s (free space on the "
          "state directory's file system, or raise its size)",
          dir_, id, extent_size_, strerror(err)));
    }
    return ErrnoStatus(err, "arena: back extent " + final_path);
  }
  void* p = mmap(nullptr, extent_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    drop_name();
    return ErrnoStatus(err, "arena: map extent " + final_path);
  }
  *static_cast<ExtentHeader*>(p) = ExpectedExtentHeader(epoch_, extent_size_, id);
  // link(), not rename(): never replace an extent file that exists (a
  // live extent is never moved or remapped). A concurrent grower that
  // linked this id first wins; the caller moves on to the next id.
  int err = LinkInto(*file, final_path);
  drop_name();
  if (err != 0) {
    munmap(p, extent_size_);
    if (err == EEXIST) {
      return absl::AlreadyExistsError(absl::StrCat("arena: ", final_path, " exists"));
    }
    return ErrnoStatus(err, "arena: publish extent " + final_path);
  }
  AdoptMapping(id, static_cast<uint8_t*>(p));
  return absl::OkStatus();
}

void Arena::AdoptMapping(uint32_t id, uint8_t* p) const {
  std::lock_guard<std::mutex> lock(map_mu_);
  // A slot already mapped is never replaced.
  if (maps_[id].load(std::memory_order_acquire) != nullptr) {
    munmap(p, extent_size_);
    return;
  }
  guards_[id] = GuardedMapping(p, extent_size_, &damage_, id);
  maps_[id].store(p, std::memory_order_release);
}

bool Arena::ExtentFileIsComplete(uint32_t id) const {
  UniqueFd fd(open(ExtentPath(id).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return false;
  struct stat st;
  if (fstat(fd.get(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != extent_size_) {
    return false;
  }
  ExtentHeader eh;
  if (pread(fd.get(), &eh, sizeof eh, 0) != static_cast<ssize_t>(sizeof eh)) {
    return false;
  }
  return ExtentHeaderMatches(eh, epoch_, extent_size_, id);
}

uint32_t Arena::RecountExtentsLocked() {
  // The published count is shared memory: check it against the files.
  uint32_t published = header_->extent_count.load(std::memory_order_acquire);
  bool scribbled_high =
      published > max_extents_ || (published > 0 && !ExtentFileIsComplete(published - 1));
  // Extents that are complete but unpublished (a grower died after
  // creating one, or the count was scribbled low) are adopted, never
  // overwritten.
  uint32_t n = scribbled_high ? 0 : published;
  while (n < max_extents_ && ExtentFileIsComplete(n)) ++n;
  if (scribbled_high) {
    header_->extent_count.store(n, std::memory_order_release);
  } else {
    PublishCount(n);
  }
  return n;
}

void Arena::PublishCount(uint32_t n) {
  uint32_t seen = header_->extent_count.load(std::memory_order_acquire);
  while (seen < n && !header_->extent_count.compare_exchange_weak(
                         seen, n, std::memory_order_release, std::memory_order_acquire)) {
  }
}

absl::StatusOr<uint32_t> Arena::RecountExtents() {
  if (access_ != Access::kReadWrite) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", dir_, ": opened read-only, cannot recount (open it read-write as its owner)"));
  }
  std::lock_guard<std::mutex> lock(grow_mu_);
  return RecountExtentsLocked();
}

absl::StatusOr<uint32_t> Arena::Grow() {
  if (access_ != Access::kReadWrite) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", dir_, ": opened read-only, cannot grow (open it read-write "
        "as its owner)"));
  }
  std::lock_guard<std::mutex> lock(grow_mu_);
  uint32_t n = RecountExtentsLocked();
  while (true) {
    if (n >= max_extents_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "arena %s: all %d extents of %d bytes are in use (raise max_extents "
          "or extent_size, or free instances)",
          dir_, max_extents_, extent_size_));
    }
    absl::Status s = CreateExtent(n);
    if (s.ok()) break;
    if (!absl::IsAlreadyExists(s)) return s;
    // Another grower published extent n first: adopt it, try the next.
    ++n;
  }
  PublishCount(n + 1);
  return n;
}

absl::StatusOr<uint8_t*> Arena::ExtentBase(uint32_t id) const {
  if (id >= extent_count()) {  // clamped to max_extents
    return absl::NotFoundError(absl::StrFormat(
        "arena %s: extent %d does not exist (the arena has %d)", dir_, id,
        extent_count()));
  }
  if (uint8_t* p = maps_[id].load(std::memory_order_acquire)) return p;
  return MapExtent(id);
}

absl::StatusOr<uint8_t*> Arena::MapExtent(uint32_t id) const {
  std::lock_guard<std::mutex> lock(map_mu_);
  if (uint8_t* p = maps_[id].load(std::memory_order_acquire)) return p;
  std::string path = ExtentPath(id);
  absl::StatusOr<UniqueFd> opened = source_(ArenaFile{static_cast<int32_t>(id)});
  if (!opened.ok()) return opened.status();
  UniqueFd fd = std::move(*opened);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "arena: stat " + path);
  if (static_cast<uint64_t>(st.st_size) != extent_size_) {
    return absl::DataLossError(absl::StrFormat(
        "arena %s: extent %d is %d bytes, expected %d (the arena is damaged)",
        dir_, id, st.st_size, extent_size_));
  }
  int prot = PROT_READ | (access_ == Access::kReadWrite ? PROT_WRITE : 0);
  void* p = mmap(nullptr, extent_size_, prot, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "arena: map extent " + path);
  const auto* eh = static_cast<const ExtentHeader*>(p);
  if (!ExtentHeaderMatches(*eh, epoch_, extent_size_, id)) {
    munmap(p, extent_size_);
    return absl::DataLossError(absl::StrFormat(
        "arena %s: extent %d has a damaged or foreign header (the arena is "
        "damaged; run 'structctl check')",
        dir_, id));
  }
  guards_[id] = GuardedMapping(p, extent_size_, &damage_, id);
  maps_[id].store(static_cast<uint8_t*>(p), std::memory_order_release);
  return static_cast<uint8_t*>(p);
}

absl::StatusOr<BlockSpan> Arena::BlockAt(uint32_t extent_id,
                                         uint32_t offset) const {
  absl::StatusOr<uint8_t*> base = ExtentBase(extent_id);
  if (!base.ok()) return base.status();
  // Geometry comes from our own copy of extent_size, never from the extent
  // header, so a scribbled header cannot move reads out of bounds.
  ExtentGeometry g = ComputeExtentGeometry(extent_size_);
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ref r:%x:%x: %s (the ref is malformed or forged; use a ref the "
        "daemon issued in this channel)",
        extent_id, offset, why));
  };
  if (offset < g.data_offset ||
      offset >= g.data_offset + uint64_t{g.slab_count} * kSlabSize) {
    return bad("offset outside the extent's slabs");
  }
  if (offset % kBlockAlign != 0) return bad("misaligned offset");
  uint32_t rel = offset - g.data_offset;
  uint32_t slab = rel / kSlabSize;
  uint32_t in_slab = rel % kSlabSize;
  const auto* descs = reinterpret_cast<const SlabDescriptor*>(
      *base + sizeof(ExtentHeader));
  // One snapshot of the descriptor, validated, is all this call uses.
  using Kind = internal::SlabSnapshot::Kind;
  const internal::SlabSnapshot snap = internal::ReadSlab(descs[slab], slab, g.slab_count);
  uint32_t capacity = 0;
  if (snap.kind == Kind::kLargeHead) {
    if (in_slab != 0) return bad("not at the start of an instance");
    capacity = snap.span * kSlabSize;
  } else if (snap.kind == Kind::kDamaged && snap.raw_block_size == kSlabLargeHead) {
    return bad("its slab descriptor is damaged");
  } else if (snap.kind == Kind::kClass) {
    if (!IsClassBlockStart(snap.block_size, in_slab)) {
      return bad("not at the start of an instance");
    }
    capacity = snap.block_size;
  } else if (snap.kind == Kind::kUnassigned && in_slab == 0 &&
             reinterpret_cast<const InstanceHeader*>(*base + offset)
                     ->generation.load(std::memory_order_acquire) != 0) {
    // The head of a freed large span: its header (with the bumped
    // generation) is still there, so this is a stale ref, not a forged one.
    return absl::NotFoundError(absl::StrFormat(
        "ref r:%x:%x: the instance was freed (stale reference; keep an owned "
        "reference while you use an instance)",
        extent_id, offset));
  } else {
    return bad("no instance at that offset");
  }
  return BlockSpan{*base + offset, capacity};
}

absl::StatusOr<InstancePtr> Arena::Resolve(Ref ref) const {
  if (ref.is_null()) {
    return absl::InvalidArgumentError(
        "ref: null reference (allocate an instance or read a non-null ref "
        "field first)");
  }
  uint32_t e = ref.extent_id();
  if (e >= extent_count()) {  // clamped to max_extents
    return absl::InvalidArgumentError(absl::StrFormat(
        "ref %s: extent %d does not exist (the arena has %d; the ref is "
        "forged or from another channel)",
        ref.ToString(), e, extent_count()));
  }
  absl::StatusOr<BlockSpan> block = BlockAt(e, ref.offset());
  if (!block.ok()) return block.status();
  const auto* h = reinterpret_cast<const InstanceHeader*>(block->block);
  uint32_t type_index = h->type_index.load(std::memory_order_acquire);
  uint32_t gen = h->generation.load(std::memory_order_acquire);
  if (type_index == 0 || (gen & kGenerationMask) != ref.generation_tag()) {
    return absl::NotFoundError(absl::StrFormat(
        "ref %s: the instance was freed (stale reference; keep an owned "
        "reference while you use an instance)",
        ref.ToString()));
  }
  return InstancePtr(block->block, ref, block->capacity);
}

}  // namespace structd::shm
