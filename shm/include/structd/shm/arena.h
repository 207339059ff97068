#ifndef STRUCTD_SHM_ARENA_H_
#define STRUCTD_SHM_ARENA_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/base/posix.h"
#include "structd/shm/arena_storage.h"
#include "structd/shm/format.h"
#include "structd/shm/mapping_guard.h"
#include "structd/shm/ref.h"

namespace structd::shm {

struct ArenaOptions {
  // Bytes per extent: a multiple of 64 KiB between 128 KiB and 256 MiB.
  uint64_t extent_size = 64ull << 20;
  // Upper bound on extents (at most kMaxExtents); growth past it fails with
  // RESOURCE_EXHAUSTED.
  uint32_t max_extents = 1024;
  // Extents created (and backed) by Create().
  uint32_t initial_extents = 1;
  // Permission bits of the files the arena creates.
  uint32_t file_mode = 0600;
};

// InvalidArgument saying how to fix a bad extent_size, max_extents or
// initial_extents; the one check of these options (Create, the daemon's
// config).
absl::Status ValidateArenaOptions(const ArenaOptions& options);

// Where a process gets the descriptors of an arena's files: the owner
// from its ArenaStorage (Arena::Open), tools by path; a member of a
// channel from the daemon over its memory socket (the client library). Called at
// open for the header and the first time each extent is needed; it may
// block (a round trip to the daemon). The descriptor must be open for
// reading, and for writing when the arena is opened kReadWrite.
using ArenaFileSource = std::function<absl::StatusOr<base::UniqueFd>(ArenaFile file)>;

// What the owner knows about its arena from its own records (the daemon's
// channel metadata), so a header scribbled in shared memory can be put
// back. Zero fields are unknown.
struct ArenaIdentity {
  uint64_t epoch = 0;
  uint64_t extent_size = 0;
  uint32_t max_extents = 0;
};

// A resolved instance: where its header is mapped in this process. Valid
// as long as the Arena that produced it lives (extents are never unmapped
// or moved while the Arena is open). Cheap to copy.
class InstancePtr {
 public:
  InstancePtr() = default;
  InstancePtr(uint8_t* block, Ref ref, uint32_t capacity)
      : block_(block), ref_(ref), capacity_(capacity) {}

  Ref ref() const { return ref_; }
  InstanceHeader& header() const {
    return *reinterpret_cast<InstanceHeader*>(block_);
  }
  uint32_t type_index() const {
    return header().type_index.load(std::memory_order_acquire);
  }
  // The first payload byte; field offsets are relative to it.
  uint8_t* payload() const { return block_ + kInstanceHeaderSize; }
  uint8_t* block() const { return block_; }
  // Bytes of the block, header included. A layout whose payload does not
  // fit (kInstanceHeaderSize + size > capacity) must not be applied: the
  // header's type index is shared memory, and may lie.
  uint32_t capacity() const { return capacity_; }
  bool Fits(uint32_t payload_size) const {
    return uint64_t{kInstanceHeaderSize} + payload_size <= capacity_;
  }
  explicit operator bool() const { return block_ != nullptr; }

 private:
  uint8_t* block_ = nullptr;
  Ref ref_;
  uint32_t capacity_ = 0;
};

// What the typed fast path of resolving (Arena::TryResolveTyped) expects
// of an instance's block: computed once per type, so the hot path does no
// class lookup and no division.
struct TypedBlock {
  uint32_t type_index = 0;
  uint32_t block_size = 0;     // its size class; 0: a large span (no fast path)
  uint64_t divisor_magic = 0;  // ceil(2^64 / block_size): divisibility by multiply
  static TypedBlock For(uint32_t type_index, uint64_t payload_size) {
    TypedBlock t;
    t.type_index = type_index;
    const size_t cls = SizeClassFor(InstanceBlockBytes(payload_size));
    if (cls < kNumSizeClasses) {
      t.block_size = kSizeClasses[cls];
      t.divisor_magic = ~uint64_t{0} / t.block_size + 1;
    }
    return t;
  }
};

// A located block: where it is mapped and how big it is.
struct BlockSpan {
  uint8_t* block = nullptr;
  uint32_t capacity = 0;  // bytes, header included
};

// An Arena is the shared memory of one channel: a header file and a list of
// extents, kept in an ArenaStorage (a directory on tmpfs by default, or
// sealed memfds). The owner (the daemon) creates it, grows it, allocates
// and frees in it; other processes open it and map extents lazily, the
// first time they resolve a Ref into one.
//
// Thread safety: every method may be called concurrently from many threads
// and processes. Growers need no lock another process could hold: each
// new extent file is built unnamed and published (link() in a directory),
// which fails if another grower published that id first (the loser takes
// the next id), and the count is only ever raised (compare-and-swap).
class Arena {
 public:
  // Creates a new arena in `dir` (created if missing, must not already hold
  // an arena), with options.initial_extents backed extents.
  // InvalidArgument for bad options, AlreadyExists if `dir` holds an arena,
  // ResourceExhausted if the file system cannot back the extents.
  static absl::StatusOr<std::unique_ptr<Arena>> Create(
      const std::string& dir, const ArenaOptions& options);
  // The same in `storage` (which must hold no arena; options.file_mode is
  // the storage's business then).
  static absl::StatusOr<std::unique_ptr<Arena>> Create(std::unique_ptr<ArenaStorage> storage,
                                                       const ArenaOptions& options);
  // Opens an existing arena. NotFound if `dir` holds none;
  // FailedPrecondition if its format version differs from this build's;
  // DataLoss if its header is damaged.
  static absl::StatusOr<std::unique_ptr<Arena>> Open(const std::string& dir,
                                                     Access access);
  static absl::StatusOr<std::unique_ptr<Arena>> Open(std::unique_ptr<ArenaStorage> storage,
                                                     Access access);
  // Opens an arena whose files come from `source` (no storage of its
  // own); `label` names it in messages. The same checks as Open. Such an
  // arena cannot Grow, RecountExtents or be adopted: those are the
  // owner's, who opens its storage.
  static absl::StatusOr<std::unique_ptr<Arena>> OpenFrom(ArenaFileSource source,
                                                         std::string label, Access access);
  // A new read-write descriptor of one of this arena's files, from its
  // storage (what the owner hands to members). FailedPrecondition for an
  // arena opened with OpenFrom.
  absl::StatusOr<base::UniqueFd> OpenFile(ArenaFile file) const;
  // Removes the arena's files from its storage (the owner's drop of the
  // arena; sealed memory is forgotten by its keeper). Mappings in this and
  // other processes stay valid until unmapped. No-op after OpenFrom.
  void RemoveFiles();
  // The owner's open after a restart: like Open(kReadWrite), but repairs
  // what other processes may have done to the files instead of refusing
  // the arena. A header whose geometry or epoch disagrees with `known`
  // (or, where `known` is zero, with extent 0's header) is rewritten; a
  // short or removed header file is recreated; an extent file that was
  // truncated, removed or given a foreign header is restored to full size
  // (its lost pages read as zeros: the instances there are gone, the
  // other extents keep theirs); the extent count is recounted from the
  // files; the owner generation is bumped. Each repair is appended to
  // `repairs` as a sentence for the log. DataLoss only when neither the
  // header nor `known` nor extent 0 says what the geometry is.
  static absl::StatusOr<std::unique_ptr<Arena>> Adopt(const std::string& dir,
                                                      const ArenaIdentity& known,
                                                      std::vector<std::string>* repairs);
  static absl::StatusOr<std::unique_ptr<Arena>> Adopt(std::unique_ptr<ArenaStorage> storage,
                                                      const ArenaIdentity& known,
                                                      std::vector<std::string>* repairs);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Adds one extent, fully backed before it is published, and returns its
  // id. ResourceExhausted if max_extents are in use or the file system is
  // full (nothing is published then). REQUIRES: Access::kReadWrite.
  absl::StatusOr<uint32_t> Grow();
  // Sets the published extent count to the extent files that are complete
  // (a count scribbled high or low, or a grower that died before
  // publishing) and returns it. Adopt() calls it.
  // REQUIRES: Access::kReadWrite.
  absl::StatusOr<uint32_t> RecountExtents();

  // What RestoreFileSizes found: a file of the arena whose size a process
  // holding its descriptor changed.
  struct SizeRepair {
    int32_t extent = ArenaFile::kHeader;  // or an extent id
    uint64_t found_bytes = 0;     // st_size found
    uint64_t allocated_bytes = 0; // st_blocks * 512 found
    bool shrunk = false;          // cut short: this arena is now damaged
  };
  // The owner's sweep over the files members hold descriptors of (they can
  // ftruncate or fallocate them; tmpfs files cannot be sealed). Nothing to
  // do where the storage's sizes are sealed. A file grown
  // past its size, or given blocks past its end (fallocate KEEP_SIZE), is
  // trimmed back, freeing what the growth took; nobody maps past the size,
  // so nothing is lost. A file cut short is restored to full size and
  // backed (other members stop taking SIGBUS there; the lost pages read as
  // zeros) and the arena is marked damaged, as the SIGBUS guard would
  // (Intact() is DataLoss until the owner re-adopts it). Returns what it
  // repaired. REQUIRES: Access::kReadWrite, opened by path.
  std::vector<SizeRepair> RestoreFileSizes();

  // Published extents (acquire). The header is shared memory that any
  // process can scribble on: a count above max_extents is clamped here, so
  // no loop over extents runs away; raw_extent_count() shows the damage.
  uint32_t extent_count() const {
    return std::min(raw_extent_count(), max_extents_);
  }
  uint32_t raw_extent_count() const {
    return header_->extent_count.load(std::memory_order_acquire);
  }
  uint64_t epoch() const { return epoch_; }
  ArenaIdentity identity() const { return {epoch_, extent_size_, max_extents_}; }
  uint64_t owner_generation() const {
    return header_->owner_generation.load(std::memory_order_acquire);
  }
  uint64_t extent_size() const { return extent_size_; }
  uint32_t max_extents() const { return max_extents_; }
  uint32_t format_version() const { return header_->format_version; }
  // The storage's label (its directory), or OpenFrom's label.
  const std::string& label() const { return label_; }
  // Where the files are; null for an arena opened with OpenFrom.
  const ArenaStorage* storage() const { return storage_.get(); }
  Access access() const { return access_; }
  // The mapped arena header (for owners and inspectors).
  ArenaHeader& header() const { return *header_; }

  // The base address of extent `id`, mapping it on first use. NotFound if
  // the extent is not published; DataLoss if its file is damaged. Lock-free
  // once mapped.
  absl::StatusOr<uint8_t*> ExtentBase(uint32_t id) const;

  // Validates `ref` and returns the instance it names. InvalidArgument for a
  // malformed ref (null, unknown extent, out of bounds, misaligned, not at a
  // block start); NotFound for a stale one (the instance was freed, or its
  // memory reused). Never reads outside a mapped extent.
  absl::StatusOr<InstancePtr> Resolve(Ref ref) const;
  // The live instance in the block `ref` names, whatever its generation
  // now: the returned InstancePtr's ref carries the header's generation.
  // For the daemon's ledgers, whose entries name a block the session owns
  // while its owner may recycle it in place (doc/lifecycle.md, "Drop").
  // Errors as Resolve's; NotFound only for a free block.
  absl::StatusOr<InstancePtr> ResolveCurrent(Ref ref) const;

  // Resolve's fast path for an instance expected to be of one type: true
  // with `*out` set if `ref` names a live instance of `want`'s type in a
  // block of its class; false whenever anything is not the common case
  // (extent not mapped here yet, another type, freed, large, damaged,
  // malformed). The caller then takes Resolve, which maps what is needed
  // and says what is wrong. Lock-free: a handful of loads, no division;
  // reads nothing outside a mapped extent whatever the ref or the arena
  // says.
  bool TryResolveTyped(Ref ref, const TypedBlock& want, InstancePtr* out) const {
    return FastResolver::Of(*this).TryResolveTyped(ref, want, out);
  }
  // What TryResolveTyped reads of the Arena, copied into a caller's cache
  // so the hot path saves the hops to the Arena and its map array. Valid
  // as long as the Arena lives.
  struct FastResolver {
    const std::atomic<uint8_t*>* maps = nullptr;
    uint32_t max_extents = 0;
    uint32_t data_offset = 0;
    uint32_t data_bytes = 0;

    static FastResolver Of(const Arena& a) {
      return {a.maps_.get(), a.max_extents_, a.data_offset_, a.data_bytes_};
    }
    bool TryResolveTyped(Ref ref, const TypedBlock& want, InstancePtr* out) const {
      const uint32_t e = ref.extent_id();
      if (e >= max_extents || want.block_size == 0) return false;
      // Mapped means published: extents are never unpublished or unmapped.
      uint8_t* const base = maps[e].load(std::memory_order_acquire);
      if (base == nullptr) return false;
      const uint32_t off = ref.offset();
      const uint32_t rel = off - data_offset;  // wraps for off < data_offset
      if (rel >= data_bytes) return false;
      const uint32_t in_slab = rel % kSlabSize;  // kSlabSize: a power of two
      const auto* descs = reinterpret_cast<const SlabDescriptor*>(base + sizeof(ExtentHeader));
      uint8_t* const block = base + off;
      const auto* h = reinterpret_cast<const InstanceHeader*>(block);
      if (descs[rel / kSlabSize].block_size.load(std::memory_order_acquire) != want.block_size ||
          in_slab * want.divisor_magic > want.divisor_magic - 1 ||  // in_slab % block_size
          in_slab + want.block_size > kSlabSize ||
          h->type_index.load(std::memory_order_acquire) != want.type_index ||
          (h->generation.load(std::memory_order_acquire) & kGenerationMask) !=
              ref.generation_tag()) {
        return false;
      }
      *out = InstancePtr(block, ref, want.block_size);
      return true;
    }
  };

  // Like Resolve but accepts blocks that are free or not yet published
  // (type_index 0); checks location only. For the owner and checkers.
  absl::StatusOr<BlockSpan> BlockAt(uint32_t extent_id, uint32_t offset) const;
  // Resolve and ResolveCurrent: the latter does not match the generation.
  absl::StatusOr<InstancePtr> ResolveBlock(Ref ref, bool any_generation) const;

  // Where extent `extent_id` of the arena in directory `dir` lives.
  static std::string ExtentPath(const std::string& dir, uint32_t extent_id);

  // OK while every mapping of this arena is intact. DataLoss naming the
  // file once a SIGBUS guard (mapping_guard.h) replaced a mapping whose
  // file was shrunk: from then on this process reads zeros there, and
  // nothing it writes reaches the file.
  absl::Status Intact() const;

 private:
  Arena(std::string label, Access access, int header_fd, ArenaHeader* header,
        uint64_t extent_size, uint32_t max_extents, uint64_t epoch);
  // Name of one file in messages.
  std::string FileName(ArenaFile file) const;
  // Makes `storage` this arena's, and the source of its files.
  void SetStorage(std::unique_ptr<ArenaStorage> storage);
  absl::StatusOr<uint8_t*> MapExtent(uint32_t id) const;
  // Builds extent `id` unnamed and publishes it. AlreadyExists if another
  // grower published that id first.
  absl::Status CreateExtent(uint32_t id);
  // Keeps this process's mapping of a new extent (first one wins).
  void AdoptMapping(uint32_t id, uint8_t* p) const;
  uint32_t RecountExtentsLocked();
  // Raises the published count to `n` (never lowers it).
  void PublishCount(uint32_t n);
  // True if extent `id` exists with this arena's size, epoch and id.
  bool ExtentFileIsComplete(uint32_t id) const;

  const std::string label_;  // the storage's label, or OpenFrom's
  std::unique_ptr<ArenaStorage> storage_;  // the owner's; null after OpenFrom
  ArenaFileSource source_;  // set once at open
  const Access access_;
  const int header_fd_;
  ArenaHeader* const header_;
  // Copied from the header at open, so a later scribble cannot change them.
  uint64_t extent_size_ = 0;
  uint32_t max_extents_ = 0;
  uint64_t epoch_ = 0;
  // From extent_size_: where slab 0 starts and the bytes of all slabs.
  uint32_t data_offset_ = 0;
  uint32_t data_bytes_ = 0;
  // maps_[i]: base of extent i in this process, or null until first use.
  std::unique_ptr<std::atomic<uint8_t*>[]> maps_;
  // guards_[i]: extent i's mapping in the SIGBUS registry (written under
  // map_mu_ before maps_[i] is published). The header's is header_guard_.
  std::unique_ptr<GuardedMapping[]> guards_;
  GuardedMapping header_guard_;
  mutable DamageFlag damage_;
  mutable std::mutex map_mu_;  // serializes first-time mapping
  std::mutex grow_mu_;         // serializes this process's growers
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_ARENA_H_
