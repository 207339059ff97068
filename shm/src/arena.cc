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

Arena::Arena(std::string label, Access access, int header_fd,
             ArenaHeader* header, uint64_t extent_size, uint32_t max_extents,
             uint64_t epoch)
    : label_(std::move(label)),
      access_(access),
      header_fd_(header_fd),
      header_(header) {
  // Validated copies, never re-read from shared memory.
  extent_size_ = extent_size;
  max_extents_ = max_extents;
  epoch_ = epoch;
  const ExtentGeometry g = ComputeExtentGeometry(extent_size_);
  data_offset_ = g.data_offset;
  data_bytes_ = g.slab_count * kSlabSize;
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
  std::string file = FileName(
      ArenaFile{tag == kHeaderTag ? ArenaFile::kHeader : static_cast<int32_t>(tag)});
  return absl::DataLossError(absl::StrCat(
      "arena ", label_, ": ", file,
      " was truncated or replaced while mapped (a process holding its descriptor, a "
      "member, or one of the daemon's uid did it); this arena is damaged: restart the "
      "daemon to repair it (the lost pages come back as zeros), or drop the channel"));
}

std::vector<Arena::SizeRepair> Arena::RestoreFileSizes() {
  std::vector<SizeRepair> repairs;
  if (access_ != Access::kReadWrite || storage_ == nullptr || storage_->sizes_sealed()) {
    return repairs;
  }
  // False once the file does not exist. A stat per file (by path, in a
  // directory: the common case); the file is opened only to repair it.
  auto check = [&](int32_t extent, uint64_t size) {
    std::optional<FileSize> now = storage_->Size(ArenaFile{extent});
    if (!now) return false;
    uint64_t found = now->bytes;
    uint64_t allocated = now->allocated;
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

std::string Arena::FileName(ArenaFile file) const {
  if (storage_ != nullptr) return storage_->Name(file);
  return file.is_header() ? absl::StrCat(label_, "/", kHeaderFile)
                          : ExtentPath(label_, static_cast<uint32_t>(file.extent));
}

void Arena::RemoveFiles() {
  if (storage_ != nullptr) storage_->RemoveAll();
}

absl::StatusOr<UniqueFd> Arena::OpenFile(ArenaFile file) const {
  if (storage_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("arena ", label_, ": opened from descriptors, it has no storage to open"));
  }
  return storage_->Open(file, Access::kReadWrite);
}

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
  return Create(DirectoryStorage(dir, options.file_mode), options);
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Create(std::unique_ptr<ArenaStorage> storage,
                                                     const ArenaOptions& options) {
  if (absl::Status s = ValidateArenaOptions(options); !s.ok()) return s;
  const std::string label = storage->label();
  auto exists = [&] {
    return absl::AlreadyExistsError(absl::StrCat(
        "arena: ", label, " already holds an arena (open it instead, or remove it)"));
  };
  if (storage->Open(ArenaFile{}, Access::kReadOnly).ok()) return exists();
  // Build the header unnamed and publish it, so an opener sees either no
  // arena or a complete header.
  absl::StatusOr<PreparedFile> file = storage->Prepare(ArenaFile{}, sizeof(ArenaHeader));
  if (!file.ok()) return file.status();
  void* p = mmap(nullptr, sizeof(ArenaHeader), PROT_READ | PROT_WRITE,
                 MAP_SHARED, file->fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "arena: map the header of " + label);
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
  if (absl::Status s = storage->Publish(ArenaFile{}, *file); !s.ok()) {
    munmap(p, sizeof(ArenaHeader));
    return absl::IsAlreadyExists(s) ? exists() : s;
  }
  std::unique_ptr<Arena> arena(new Arena(label, Access::kReadWrite, file->fd.release(), h,
                                         options.extent_size, options.max_extents, epoch));
  arena->SetStorage(std::move(storage));
  for (uint32_t i = 0; i < options.initial_extents; ++i) {
    absl::StatusOr<uint32_t> id = arena->Grow();
    if (!id.ok()) {
      // Leave nothing behind: a retry must be able to create the arena.
      std::unique_ptr<ArenaStorage> left = std::move(arena->storage_);
      arena.reset();
      left->RemoveAll();
      return id.status();
    }
  }
  return arena;
}

void Arena::SetStorage(std::unique_ptr<ArenaStorage> storage) {
  const ArenaStorage* raw = storage.get();
  const Access access = access_;
  storage_ = std::move(storage);
  source_ = [raw, access](ArenaFile file) { return raw->Open(file, access); };
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Open(const std::string& dir,
                                                   Access access) {
  return Open(DirectoryStorage(dir), access);
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Open(std::unique_ptr<ArenaStorage> storage,
                                                   Access access) {
  const ArenaStorage* raw = storage.get();
  absl::StatusOr<std::unique_ptr<Arena>> arena = OpenFrom(
      [raw, access](ArenaFile file) { return raw->Open(file, access); }, raw->label(), access);
  if (arena.ok()) (*arena)->SetStorage(std::move(storage));
  return arena;
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

absl::Status Arena::CreateExtent(uint32_t id) {
  const ArenaFile file{static_cast<int32_t>(id)};
  absl::StatusOr<PreparedFile> prepared = storage_->Prepare(file, extent_size_);
  if (!prepared.ok()) return prepared.status();
  int fd = prepared->fd.get();
  // Copy the header file's mode so clients that may open the arena may
  // open its extents.
  struct stat st;
  if (fstat(header_fd_, &st) == 0) fchmod(fd, st.st_mode & 07777);
  void* p = mmap(nullptr, extent_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "arena: map extent " + FileName(file));
  *static_cast<ExtentHeader*>(p) = ExpectedExtentHeader(epoch_, extent_size_, id);
  // Never replaces an extent that exists (a live extent is never moved or
  // remapped). A concurrent grower that published this id first wins; the
  // caller moves on to the next id.
  if (absl::Status s = storage_->Publish(file, *prepared); !s.ok()) {
    munmap(p, extent_size_);
    return s;
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
  absl::StatusOr<UniqueFd> fd = storage_->Open(ArenaFile{static_cast<int32_t>(id)},
                                                Access::kReadOnly);
  if (!fd.ok()) return false;
  struct stat st;
  if (fstat(fd->get(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != extent_size_) {
    return false;
  }
  ExtentHeader eh;
  if (pread(fd->get(), &eh, sizeof eh, 0) != static_cast<ssize_t>(sizeof eh)) {
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
  if (access_ != Access::kReadWrite || storage_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", label_, ": opened read-only, cannot recount (open it read-write as its owner)"));
  }
  std::lock_guard<std::mutex> lock(grow_mu_);
  return RecountExtentsLocked();
}

absl::StatusOr<uint32_t> Arena::Grow() {
  if (access_ != Access::kReadWrite || storage_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", label_, ": opened read-only, cannot grow (open it read-write "
        "as its owner)"));
  }
  std::lock_guard<std::mutex> lock(grow_mu_);
  uint32_t n = RecountExtentsLocked();
  while (true) {
    if (n >= max_extents_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "arena %s: all %d extents of %d bytes are in use (raise max_extents "
          "or extent_size, or free instances)",
          label_, max_extents_, extent_size_));
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
        "arena %s: extent %d does not exist (the arena has %d)", label_, id,
        extent_count()));
  }
  if (uint8_t* p = maps_[id].load(std::memory_order_acquire)) return p;
  return MapExtent(id);
}

absl::StatusOr<uint8_t*> Arena::MapExtent(uint32_t id) const {
  std::lock_guard<std::mutex> lock(map_mu_);
  if (uint8_t* p = maps_[id].load(std::memory_order_acquire)) return p;
  std::string path = FileName(ArenaFile{static_cast<int32_t>(id)});
  absl::StatusOr<UniqueFd> opened = source_(ArenaFile{static_cast<int32_t>(id)});
  if (!opened.ok()) return opened.status();
  UniqueFd fd = std::move(*opened);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "arena: stat " + path);
  if (static_cast<uint64_t>(st.st_size) != extent_size_) {
    return absl::DataLossError(absl::StrFormat(
        "arena %s: extent %d is %d bytes, expected %d (the arena is damaged)",
        label_, id, st.st_size, extent_size_));
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
        label_, id));
  }
  guards_[id] = GuardedMapping(p, extent_size_, &damage_, id);
  maps_[id].store(static_cast<uint8_t*>(p), std::memory_order_release);
  return static_cast<uint8_t*>(p);
}

absl::StatusOr<BlockSpan> Arena::BlockAt(uint32_t extent_id,
                                         uint32_t offset) const {
  absl::StatusOr<uint8_t*> base = ExtentBase(extent_id);
  if (!base.ok()) return base.status();
  // Geometry comes from our own copy of extent_size (computed once, at
  // open), never from the extent header, so a scribbled header cannot move
  // reads out of bounds.
  const ExtentGeometry g{data_bytes_ / kSlabSize, data_offset_};
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
  return ResolveBlock(ref, /*any_generation=*/false);
}

absl::StatusOr<InstancePtr> Arena::ResolveCurrent(Ref ref) const {
  return ResolveBlock(ref, /*any_generation=*/true);
}

absl::StatusOr<InstancePtr> Arena::ResolveBlock(Ref ref, bool any_generation) const {
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
  if (type_index == 0 ||
      (!any_generation && (gen & kGenerationMask) != ref.generation_tag())) {
    return absl::NotFoundError(absl::StrFormat(
        "ref %s: the instance was freed (stale reference; keep an owned "
        "reference while you use an instance)",
        ref.ToString()));
  }
  if (any_generation) ref = Ref::Make(e, ref.offset(), gen);
  return InstancePtr(block->block, ref, block->capacity);
}

}  // namespace structd::shm
