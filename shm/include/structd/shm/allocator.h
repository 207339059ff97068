#ifndef STRUCTD_SHM_ALLOCATOR_H_
#define STRUCTD_SHM_ALLOCATOR_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/shm/arena.h"
#include "structd/shm/format.h"
#include "structd/shm/layout.h"
#include "structd/shm/ref.h"

namespace structd::shm {

// What Adopt() found while scanning an arena.
struct AdoptReport {
  uint64_t live_instances = 0;
  uint64_t free_blocks = 0;
  uint64_t large_spans = 0;
  // Published instances whose refcount is zero: a previous owner died in
  // the middle of freeing them. The caller finishes the job (Release-like)
  // once it knows the types.
  std::vector<Ref> condemned;
  // Damage found and worked around (quarantined slabs, unreadable extents).
  std::vector<std::string> problems;
};

struct AllocatorStats {
  uint64_t live_instances = 0;
  uint64_t live_block_bytes = 0;  // bytes of blocks in use, headers included
  uint64_t free_blocks = 0;       // on free lists
  uint64_t free_block_bytes = 0;  // bytes of those blocks
  uint64_t class_slabs = 0;       // slabs dedicated to a size class
  uint64_t large_slabs = 0;       // slabs in large spans
  uint64_t unassigned_slabs = 0;
  uint64_t extents = 0;
  uint64_t extent_bytes = 0;
  // Times the shared slab descriptors disagreed with the owner's own record
  // (another process wrote them). The owner acted on its record.
  uint64_t descriptor_mismatches = 0;
  // Since this Allocator was made: ref fields of freed instances that named
  // nothing valid, and blocks whose header or descriptor was damaged, that
  // frees skipped (ReleaseResult::dangling and ::damaged, summed).
  uint64_t damage_refused = 0;
};

// Live instances and their blocks' bytes (headers included) of one type.
struct TypeUse {
  uint64_t instances = 0;
  uint64_t bytes = 0;
};

struct ReleaseResult {
  // Instances freed by this call (the released one and any it owned,
  // transitively).
  uint64_t freed = 0;
  // Ref fields of freed instances that named nothing valid (stale or
  // malformed refs written by a client); skipped, reported here.
  uint64_t dangling = 0;
  // Instances whose header or slab descriptor had been damaged by a client
  // (type index of a layout that does not fit the block, descriptor changed
  // under us): their ref fields were not followed, or the block was left
  // allocated rather than freed into a damaged slab.
  uint64_t damaged = 0;
};

// Allocates and frees instances in an arena. Owner side only: exactly one
// Allocator per arena may exist across all processes (the daemon's); other
// processes only read and write fields.
//
// Thread safety: none. The caller serializes all calls (the daemon holds the
// channel's lock). Readers in other processes may run concurrently: a block
// is zeroed and initialized before its type_index is published (release).
//
// The arena's contents are untrusted: every free-list link, descriptor and
// header is validated before use. Damage makes a call fail or quarantines a
// slab; it never makes the allocator read or write outside the arena.
//
// State that lives here (free-list heads, bump slabs, a scan hint) is a
// cache of what the arena says; Adopt() rebuilds it from the arena alone,
// which is how a restarted daemon re-adopts an arena (invariant 7).
class Allocator {
 public:
  using TypeLookup = std::function<const Layout*(uint32_t type_index)>;
  // The owner's quotas on growth: `reserve(bytes)` is asked before the
  // arena grows by one extent of `bytes`; an error (ResourceExhausted
  // naming a quota) stops the growth and fails the allocation that needed
  // it. `cancel(bytes)` returns a reservation whose growth then failed.
  struct GrowthGate {
    std::function<absl::Status(uint64_t bytes)> reserve;
    std::function<void(uint64_t bytes)> cancel;
  };

  // Scans `arena` (opened read-write) and rebuilds the allocation state.
  // `report` (optional) receives what the scan found.
  static absl::StatusOr<std::unique_ptr<Allocator>> Adopt(
      Arena* arena, AdoptReport* report = nullptr);

  // Allocates one zeroed instance of `layout` with refcount 1 and publishes
  // it under `type_index` (non-zero). Grows the arena when needed;
  // ResourceExhausted when it cannot.
  absl::StatusOr<Ref> Allocate(uint32_t type_index, const Layout& layout);
  // Installs the gate every growth must pass (none: growth up to the
  // arena's max_extents). Not thread-safe: set it before sharing.
  void SetGrowthGate(GrowthGate gate) { growth_gate_ = std::move(gate); }
  // Allocates `count` instances, appending their refs to `out`. All or
  // nothing: on failure nothing is left allocated and `out` is unchanged.
  absl::Status AllocateBatch(uint32_t type_index, const Layout& layout,
                             size_t count, std::vector<Ref>& out);

  // Adds one reference. NotFound/InvalidArgument for a stale or malformed
  // ref; ResourceExhausted if the refcount would overflow.
  absl::Status Retain(Ref ref);
  // Drops one reference. At zero the instance is freed, and the references
  // held in its ref fields are released in turn, iteratively (no recursion:
  // a chain of a million instances is fine). `types` maps a type index to
  // its layout; an unknown type frees the block without following refs.
  absl::StatusOr<ReleaseResult> Release(Ref ref, const TypeLookup& types);
  // Frees an instance whose refcount is already zero (see
  // AdoptReport::condemned). FailedPrecondition if its refcount is not zero.
  absl::StatusOr<ReleaseResult> FinishCondemned(Ref ref,
                                                const TypeLookup& types);
  // Recovery: makes `ref`'s refcount `count` (the references a census
  // found), freeing the instance when `count` is 0. The Allocator is the
  // only writer of instance headers; this is the repair path into it.
  absl::StatusOr<ReleaseResult> SetRefcount(Ref ref, uint32_t count, const TypeLookup& types);

  AllocatorStats Stats() const;
  // Live instances per type index, kept as instances are published and
  // freed. Exact unless a member rewrote the type index of a live
  // instance (then the free is charged to the type it names, never below 0).
  const std::unordered_map<uint32_t, TypeUse>& LiveByType() const { return live_by_type_; }
  Arena& arena() const { return *arena_; }
  // Every slab whose shared descriptor disagrees with the owner's record
  // (block size, span length, blocks handed out), one sentence each, for
  // the consistency check. Read-only.
  std::vector<std::string> DescriptorMismatches() const;

 private:
  // (extent << 32) | offset. 0 means none (offsets are never 0).
  using Loc = uint64_t;
  // The owner's own record of one slab. The SlabDescriptor in the arena
  // mirrors it for readers, but any member can write that; the owner
  // decides from this copy, so a scribbled descriptor can never make it
  // hand out a live block, re-carve a live slab or free a neighbour.
  struct SlabState {
    uint32_t block_size = kSlabUnassigned;  // as SlabDescriptor, or kQuarantined
    uint32_t span = 0;                      // large head: slabs in the span
    uint32_t next_unused = 0;               // class slab: blocks handed out
  };
  // A slab found damaged at Adopt: never allocated from.
  static constexpr uint32_t kQuarantined = 1;
  struct ClassState {
    Loc free_head = 0;
    uint64_t free_count = 0;
    // Slab with never-used blocks: (extent << 32) | slab index, or ~0.
    uint64_t bump_slab = ~uint64_t{0};
  };

  // A block located from one validated snapshot of its slab descriptor.
  struct Block {
    Loc loc = 0;
    uint32_t capacity = 0;    // bytes, header included
    uint32_t class_size = 0;  // size-class slab: the block size; else 0
    uint32_t span = 0;        // large span: slabs in it; else 0
  };

  explicit Allocator(Arena* arena);
  // DataLoss if the descriptor no longer describes a block at `loc` (a
  // client scribbled on it): the caller then leaves the block alone.
  absl::StatusOr<Block> Locate(Loc loc) const;
  absl::Status Scan(AdoptReport& report);
  absl::StatusOr<Loc> TakeClassBlock(size_t cls);
  absl::StatusOr<Loc> TakeLargeSpan(uint32_t slabs);
  // Finds `n` consecutive unassigned slabs, growing the arena if needed.
  absl::StatusOr<uint64_t> FindUnassignedRun(uint32_t n);
  Ref Publish(Loc loc, uint32_t capacity, uint32_t type_index,
              const Layout& layout);
  void FreeBlock(const Block& block);
  absl::StatusOr<ReleaseResult> FreeCascade(Loc first,
                                            const TypeLookup& types);
  // Decrements the refcount behind `ref`; true if it reached zero.
  absl::StatusOr<bool> DropOne(Ref ref, Loc* loc);

  uint8_t* Base(uint32_t extent) const { return bases_[extent]; }
  ExtentHeader& Header(uint32_t extent) const {
    return *reinterpret_cast<ExtentHeader*>(bases_[extent]);
  }
  SlabDescriptor& Desc(uint32_t extent, uint32_t slab) const {
    return reinterpret_cast<SlabDescriptor*>(bases_[extent] +
                                             sizeof(ExtentHeader))[slab];
  }
  InstanceHeader& HeaderAt(Loc loc) const {
    return *reinterpret_cast<InstanceHeader*>(
        bases_[loc >> 32] + static_cast<uint32_t>(loc));
  }
  uint32_t SlabOf(uint32_t offset) const {
    return (offset - geometry_.data_offset) / kSlabSize;
  }
  uint32_t SlabOffset(uint32_t slab) const {
    return geometry_.data_offset + slab * kSlabSize;
  }
  // Maps every published extent into bases_.
  absl::Status RefreshExtents();

  Arena* const arena_;
  const ExtentGeometry geometry_;
  std::vector<uint8_t*> bases_;  // extents usable by the allocator
  std::vector<bool> quarantined_extent_;
  std::vector<std::vector<SlabState>> slabs_;  // [extent][slab]
  uint64_t descriptor_mismatches_ = 0;
  SlabState& State(uint32_t extent, uint32_t slab) { return slabs_[extent][slab]; }
  const SlabState& State(uint32_t extent, uint32_t slab) const { return slabs_[extent][slab]; }
  std::array<ClassState, kNumSizeClasses> classes_;
  // Where FindUnassignedRun starts looking: (extent << 32) | slab.
  uint64_t scan_hint_ = 0;
  uint64_t live_instances_ = 0;
  uint64_t live_block_bytes_ = 0;
  uint64_t damage_refused_ = 0;
  std::unordered_map<uint32_t, TypeUse> live_by_type_;
  void CountLive(uint32_t type_index, uint64_t bytes);
  GrowthGate growth_gate_;
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_ALLOCATOR_H_
