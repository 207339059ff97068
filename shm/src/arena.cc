#include "structd/shm/arena.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/shm/internal/posix.h"

namespace structd::shm {
namespace {

using internal::ErrnoStatus;
using internal::UniqueFd;

constexpr const char* kHeaderFile = "arena";

// posix_fallocate, retried on EINTR (tmpfs returns it when a signal is
// pending during a large allocation).
int Fallocate(int fd, off_t bytes) {
  int err;
  do {
    err = posix_fallocate(fd, 0, bytes);
  } while (err == EINTR);
  return err;
}

constexpr const char* kGrowLockFile = "grow.lock";

bool IsNoSpace(int err) {
  return err == ENOSPC || err == EDQUOT || err == EFBIG;
}

// Checks options before anything is created.
absl::Status ValidateOptions(const ArenaOptions& o) {
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

}  // namespace

Arena::Arena(std::string dir, Access access, int header_fd,
             ArenaHeader* header, uint64_t extent_size, uint32_t max_extents,
             uint64_t epoch)
    : dir_(std::move(dir)),
      access_(access),
      header_fd_(header_fd),
      header_(header) {
  // Validated copies, never re-read from shared memory.
  extent_size_ = extent_size;
  max_extents_ = max_extents;
  epoch_ = epoch;
  maps_ = std::make_unique<std::atomic<uint8_t*>[]>(max_extents_);
  for (uint32_t i = 0; i < max_extents_; ++i) maps_[i].store(nullptr);
}

Arena::~Arena() {
  for (uint32_t i = 0; i < max_extents_; ++i) {
    if (uint8_t* p = maps_[i].load()) munmap(p, extent_size_);
  }
  munmap(header_, sizeof(ArenaHeader));
  close(header_fd_);
}

std::string Arena::ExtentPath(uint32_t extent_id) const {
  return absl::StrCat(dir_, "/extent.", extent_id);
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Create(
    const std::string& dir, const ArenaOptions& options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
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
  UniqueFd fd(open(tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                   options.file_mode));
  if (!fd) return ErrnoStatus(errno, "arena: create " + tmp_path);
  // The grow lock lives in its own file, readable by the owner only, so a
  // client that may open the arena cannot hold up the owner's growth.
  {
    std::string lock_path = absl::StrCat(dir, "/", kGrowLockFile);
    UniqueFd lock(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock) return ErrnoStatus(errno, "arena: create " + lock_path);
  }
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
        unlink(absl::StrCat(dir, "/extent.", j, ".tmp").c_str());
      }
      unlink(absl::StrCat(dir, "/", kGrowLockFile).c_str());
      unlink(final_path.c_str());
      return id.status();
    }
  }
  return arena;
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Open(const std::string& dir,
                                                   Access access) {
  std::string path = absl::StrCat(dir, "/", kHeaderFile);
  int flags = (access == Access::kReadWrite ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  UniqueFd fd(open(path.c_str(), flags));
  if (!fd) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          "arena: no arena in ", dir, " (create one first, or check the path)"));
    }
    return ErrnoStatus(errno, "arena: open " + path);
  }
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
  return std::unique_ptr<Arena>(
      new Arena(dir, access, fd.release(), h, es, me, epoch));
}

absl::Status Arena::CreateExtentLocked(uint32_t id) {
  std::string final_path = ExtentPath(id);
  std::string tmp_path = final_path + ".tmp";
  UniqueFd fd(open(tmp_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
                   0600));
  if (!fd) return ErrnoStatus(errno, "arena: create extent " + tmp_path);
  // Copy the header file's mode so clients that may open the arena may
  // open its extents.
  struct stat st;
  if (fstat(header_fd_, &st) == 0) fchmod(fd.get(), st.st_mode & 07777);
  // Back every page now: a full tmpfs fails here, never with SIGBUS later.
  if (int err = Fallocate(fd.get(), static_cast<off_t>(extent_size_));
      err != 0) {
    unlink(tmp_path.c_str());
    if (IsNoSpace(err)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "arena %s: cannot back extent %d of %d bytes: %s (free space on the "
          "state directory's file system, or raise its size)",
          dir_, id, extent_size_, strerror(err)));
    }
    return ErrnoStatus(err, "arena: back extent " + tmp_path);
  }
  void* p = mmap(nullptr, extent_size_, PROT_READ | PROT_WRITE, MAP_SHARED,
                 fd.get(), 0);
  if (p == MAP_FAILED) {
    int err = errno;
    unlink(tmp_path.c_str());
    return ErrnoStatus(err, "arena: map extent " + tmp_path);
  }
  ExtentGeometry g = ComputeExtentGeometry(extent_size_);
  auto* eh = static_cast<ExtentHeader*>(p);
  eh->magic = kExtentMagic;
  eh->epoch = epoch_;
  eh->extent_size = extent_size_;
  eh->extent_id = id;
  eh->slab_count = g.slab_count;
  eh->data_offset = g.data_offset;
  // link(), not rename(): never replace an extent file that exists (a
  // live extent is never moved or remapped).
  if (link(tmp_path.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    munmap(p, extent_size_);
    unlink(tmp_path.c_str());
    return ErrnoStatus(err, "arena: publish extent " + final_path);
  }
  unlink(tmp_path.c_str());
  // Keep this process's mapping; the count published next makes the
  // extent visible. A slot already mapped is never replaced.
  uint8_t* expected = nullptr;
  if (!maps_[id].compare_exchange_strong(expected, static_cast<uint8_t*>(p))) {
    munmap(p, extent_size_);
  }
  return absl::OkStatus();
}

bool Arena::ExtentFileIsComplete(uint32_t id) const {
  UniqueFd fd(open(ExtentPath(id).c_str(), O_RDONLY | O_CLOEXEC));
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
  ExtentGeometry g = ComputeExtentGeometry(extent_size_);
  return eh.magic == kExtentMagic && eh.epoch == epoch_ &&
         eh.extent_id == id && eh.extent_size == extent_size_ &&
         eh.slab_count == g.slab_count && eh.data_offset == g.data_offset;
}

absl::StatusOr<uint32_t> Arena::WithGrowLock(
    const std::function<absl::StatusOr<uint32_t>()>& fn) {
  if (access_ != Access::kReadWrite) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", dir_, ": opened read-only, cannot grow (open it read-write "
        "as its owner)"));
  }
  // A fresh descriptor per call: flock excludes open file descriptions, and
  // a descriptor inherited over fork() (or shared by threads) would not
  // exclude its twin.
  std::string lock_path = absl::StrCat(dir_, "/", kGrowLockFile);
  UniqueFd lock_fd(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd) return ErrnoStatus(errno, "arena: open " + lock_path);
  internal::FileLock lock(lock_fd.get(), std::chrono::seconds(10));
  if (!lock.ok()) {
    if (lock.error() == EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat(
          "arena ", dir_, ": another process has held the grow lock for 10 s "
          "(only the daemon should grow an arena; find the holder with "
          "'fuser ", lock_path, "')"));
    }
    return ErrnoStatus(lock.error(), "arena: lock " + lock_path);
  }
  return fn();
}

uint32_t Arena::RecountExtentsLocked() {
  // The published count is shared memory: check it against the files.
  uint32_t n = header_->extent_count.load(std::memory_order_acquire);
  if (n > max_extents_ || (n > 0 && !ExtentFileIsComplete(n - 1))) {
    n = 0;  // scribbled high: count the complete extents from the start
    while (n < max_extents_ && ExtentFileIsComplete(n)) ++n;
  }
  // Extents that are complete but unpublished (a grower died after
  // creating one, or the count was scribbled low) are adopted, never
  // overwritten.
  while (n < max_extents_ && ExtentFileIsComplete(n)) ++n;
  if (n != header_->extent_count.load(std::memory_order_acquire)) {
    header_->extent_count.store(n, std::memory_order_release);
  }
  return n;
}

absl::StatusOr<uint32_t> Arena::RecountExtents() {
  return WithGrowLock([this]() -> absl::StatusOr<uint32_t> { return RecountExtentsLocked(); });
}

absl::StatusOr<uint32_t> Arena::Grow() {
  return WithGrowLock([this]() -> absl::StatusOr<uint32_t> {
    uint32_t n = RecountExtentsLocked();
    if (n >= max_extents_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "arena %s: all %d extents of %d bytes are in use (raise max_extents "
          "or extent_size, or free instances)",
          dir_, max_extents_, extent_size_));
    }
    if (absl::Status s = CreateExtentLocked(n); !s.ok()) return s;
    header_->extent_count.store(n + 1, std::memory_order_release);
    return n;
  });
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
  int flags = (access_ == Access::kReadWrite ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  UniqueFd fd(open(path.c_str(), flags));
  if (!fd) return ErrnoStatus(errno, "arena: open extent " + path);
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
  ExtentGeometry g = ComputeExtentGeometry(extent_size_);
  if (eh->magic != kExtentMagic || eh->epoch != epoch_ ||
      eh->extent_id != id || eh->extent_size != extent_size_ ||
      eh->slab_count != g.slab_count || eh->data_offset != g.data_offset) {
    munmap(p, extent_size_);
    return absl::DataLossError(absl::StrFormat(
        "arena %s: extent %d has a damaged or foreign header (the arena is "
        "damaged; run 'structctl check')",
        dir_, id));
  }
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
  uint32_t bs = descs[slab].block_size.load(std::memory_order_acquire);
  uint32_t capacity = 0;
  if (bs == kSlabLargeHead) {
    uint32_t span = descs[slab].span_slabs.load(std::memory_order_acquire);
    if (in_slab != 0) return bad("not at the start of an instance");
    if (span == 0 || span > g.slab_count - slab) {
      return bad("its slab descriptor is damaged");
    }
    capacity = span * kSlabSize;
  } else if (IsSizeClass(bs)) {
    if (!IsClassBlockStart(bs, in_slab)) {
      return bad("not at the start of an instance");
    }
    capacity = bs;
  } else if (bs == kSlabUnassigned && in_slab == 0 &&
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
