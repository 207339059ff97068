#ifndef STRUCTD_SHM_FORMAT_H_
#define STRUCTD_SHM_FORMAT_H_

// The arena's on-disk (tmpfs) format, version 1. Everything in this file
// lives in shared memory: plain structs, no virtuals, no pointers, only
// fixed-width integers and lock-free atomics. Any process that maps the
// arena can write these bytes, so readers validate before they trust.
// See doc/arena-format.md for the full description.
//
//   DIR/arena        ArenaHeader (one page)
//   DIR/extent.N     ExtentHeader, SlabDescriptor[slab_count], slabs
//
// Each slab is kSlabSize bytes and either unassigned, dedicated to one
// block size (a size class), or part of a large span of whole slabs that
// holds one big instance. Every block starts with an InstanceHeader.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace structd::shm {

inline constexpr uint64_t kArenaMagic = 0x31414e4552414453ull;   // "SDARENA1"
inline constexpr uint64_t kExtentMagic = 0x31544e4554584553ull;  // "SEXTENT1"
inline constexpr uint32_t kFormatVersion = 1;
// DIR/arena holds the ArenaHeader; DIR/extent.N the extents.
inline constexpr const char* kArenaHeaderFile = "arena";

inline constexpr uint32_t kSlabSize = 64 * 1024;
inline constexpr uint32_t kBlockAlign = 16;
inline constexpr uint64_t kMinExtentSize = 2 * kSlabSize;
// Offsets are stored in 16-byte units in 24 bits of a Ref.
inline constexpr uint64_t kMaxExtentSize = uint64_t{1} << 28;  // 256 MiB
// Extent ids are stored (plus one) in 14 bits of a Ref.
inline constexpr uint32_t kMaxExtents = (1u << 14) - 1;

// Page 0 of DIR/arena.
struct ArenaHeader {
  uint64_t magic;
  uint32_t format_version;
  uint32_t header_size;  // sizeof(ArenaHeader)
  uint64_t epoch;        // random, fixed at creation; also in every extent
  uint64_t extent_size;  // bytes in every extent
  uint32_t max_extents;
  // Extents [0, extent_count) exist and are fully backed. Written with
  // release by the grower after the extent file is complete; read with
  // acquire before touching any extent.
  std::atomic<uint32_t> extent_count;
  uint64_t created_unix_ms;
  // Bumped (by the owner) every time an owner adopts the arena; lets
  // clients notice a daemon restart.
  std::atomic<uint64_t> owner_generation;
  uint8_t reserved[4096 - 56];
};
static_assert(sizeof(ArenaHeader) == 4096);
static_assert(std::is_standard_layout_v<ArenaHeader>);

// Marker values of SlabDescriptor::block_size.
inline constexpr uint32_t kSlabUnassigned = 0;
inline constexpr uint32_t kSlabLargeHead = 0xFFFFFFFFu;
inline constexpr uint32_t kSlabLargeTail = 0xFFFFFFFEu;

// One per slab, in the extent's header area. Written only by the owner;
// block_size is stored (release) before any block in the slab is published.
struct SlabDescriptor {
  std::atomic<uint32_t> block_size;  // a size class, or a marker above
  std::atomic<uint32_t> span_slabs;  // large head: slabs in the span
  std::atomic<uint32_t> next_unused;  // class slab: blocks ever handed out
  std::atomic<uint32_t> live;  // blocks (or the large block) in use
  // Every generation any freed block starting in this slab ever had is <=
  // this watermark. Blocks carved from the slab's memory when it is
  // recycled start above it, so a stale Ref to recycled memory can never
  // match (invariant 4). Per slab, so one hot block cannot use up the
  // generation space of others.
  std::atomic<uint32_t> generation_watermark;
  uint32_t reserved[3];
};
static_assert(sizeof(SlabDescriptor) == 32);

// Offset 0 of every extent file.
struct ExtentHeader {
  uint64_t magic;
  uint64_t epoch;  // must equal the arena's
  uint64_t extent_size;
  uint32_t extent_id;
  uint32_t slab_count;
  uint32_t data_offset;  // offset of slab 0; slabs follow back to back
  uint8_t reserved[28];
};
static_assert(sizeof(ExtentHeader) == 64);
static_assert(std::is_standard_layout_v<ExtentHeader>);

// Bits of InstanceHeader::flags.
inline constexpr uint32_t kInstanceFreeListed = 1u << 0;  // on a free list
inline constexpr uint32_t kInstanceRetired = 1u << 1;  // generation exhausted

// The first 16 bytes of every block. The payload (the fields) follows.
struct InstanceHeader {
  // Index of the instance's type in the channel registry; 0 while the block
  // is free or being built. Stored with release last when publishing, so a
  // reader that sees it non-zero (acquire) sees zeroed, initialized fields.
  std::atomic<uint32_t> type_index;
  // Bumped on every free; its low kGenerationBits are part of every Ref.
  std::atomic<uint32_t> generation;
  std::atomic<uint32_t> refcount;
  std::atomic<uint32_t> flags;
};
static_assert(sizeof(InstanceHeader) == 16);
static_assert(std::is_standard_layout_v<InstanceHeader>);
static_assert(std::atomic<uint32_t>::is_always_lock_free &&
                  std::atomic<uint64_t>::is_always_lock_free,
              "shared across processes: atomics must never fall back to a "
              "lock");

inline constexpr uint32_t kInstanceHeaderSize = sizeof(InstanceHeader);

// Size classes: block sizes (header included) of class slabs. A block that
// needs more than the largest class uses a large span of whole slabs.
inline constexpr uint32_t kSizeClasses[] = {
    32,    48,    64,    80,    96,    112,   128,   160,   192,   224,
    256,   320,   384,   448,   512,   640,   768,   896,   1024,  1280,
    1536,  1792,  2048,  2560,  3072,  3584,  4096,  5120,  6144,  7168,
    8192,  10240, 12288, 14336, 16384, 21840, 32768, 65536};
inline constexpr size_t kNumSizeClasses = std::size(kSizeClasses);

// Index of the smallest class holding `block_bytes`, or kNumSizeClasses if
// the block needs a large span.
constexpr size_t SizeClassFor(uint64_t block_bytes) {
  for (size_t i = 0; i < kNumSizeClasses; ++i) {
    if (block_bytes <= kSizeClasses[i]) return i;
  }
  return kNumSizeClasses;
}
// Bytes of the block an instance with `payload_size` bytes of fields
// takes, header included (at least 8 payload bytes: a freed block keeps a
// link there). Its class is SizeClassFor of it.
constexpr uint64_t InstanceBlockBytes(uint64_t payload_size) {
  return kInstanceHeaderSize + (payload_size < 8 ? 8 : payload_size);
}
constexpr bool IsSizeClass(uint32_t block_size) {
  for (uint32_t c : kSizeClasses) {
    if (c == block_size) return true;
  }
  return false;
}

// True if a block of class `block_size` may start `in_slab` bytes into a
// slab: the one rule every reader of untrusted descriptors applies.
constexpr bool IsClassBlockStart(uint32_t block_size, uint32_t in_slab) {
  return IsSizeClass(block_size) && in_slab % block_size == 0 &&
         uint64_t{in_slab} + block_size <= kSlabSize;
}

// Bytes of header area (ExtentHeader + descriptors, page-rounded) and the
// number of slabs for an extent of `extent_size` bytes.
struct ExtentGeometry {
  uint32_t slab_count;
  uint32_t data_offset;
};
constexpr ExtentGeometry ComputeExtentGeometry(uint64_t extent_size) {
  uint64_t slabs = extent_size / kSlabSize;
  while (slabs > 0) {
    uint64_t header =
        sizeof(ExtentHeader) + slabs * sizeof(SlabDescriptor);
    header = (header + 4095) / 4096 * 4096;
    if (header + slabs * kSlabSize <= extent_size) {
      return {static_cast<uint32_t>(slabs), static_cast<uint32_t>(header)};
    }
    --slabs;
  }
  return {0, 0};
}

// The header extent `id` of an arena with this epoch and extent size has.
inline ExtentHeader ExpectedExtentHeader(uint64_t epoch, uint64_t extent_size, uint32_t id) {
  ExtentGeometry g = ComputeExtentGeometry(extent_size);
  ExtentHeader h{};
  h.magic = kExtentMagic;
  h.epoch = epoch;
  h.extent_size = extent_size;
  h.extent_id = id;
  h.slab_count = g.slab_count;
  h.data_offset = g.data_offset;
  return h;
}

// True if `h` is that header: the one rule every opener of an extent
// applies before it maps or trusts the extent.
inline bool ExtentHeaderMatches(const ExtentHeader& h, uint64_t epoch, uint64_t extent_size,
                                uint32_t id) {
  ExtentHeader want = ExpectedExtentHeader(epoch, extent_size, id);
  return h.magic == want.magic && h.epoch == want.epoch && h.extent_size == want.extent_size &&
         h.extent_id == want.extent_id && h.slab_count == want.slab_count &&
         h.data_offset == want.data_offset;
}

}  // namespace structd::shm

#endif  // STRUCTD_SHM_FORMAT_H_
