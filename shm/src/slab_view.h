#ifndef STRUCTD_SHM_SRC_SLAB_VIEW_H_
#define STRUCTD_SHM_SRC_SLAB_VIEW_H_

// The one reader of an untrusted SlabDescriptor (shm-internal). Every
// member can write descriptors, so each reader takes one snapshot of one
// descriptor, validated here, and acts on nothing else: Arena::BlockAt,
// ForEachInstance and Allocator::Scan all read slabs through ReadSlab. (The
// allocator decides allocation from its own record, not from descriptors;
// see Allocator::SlabState.)

#include <atomic>
#include <cstdint>

#include "structd/shm/format.h"

namespace structd::shm::internal {

struct SlabSnapshot {
  enum class Kind { kUnassigned, kClass, kLargeHead, kLargeTail, kDamaged };
  Kind kind = Kind::kDamaged;
  uint32_t block_size = 0;  // kClass: a size class
  uint32_t span = 0;        // kLargeHead: 1 .. slab_count - slab
  uint32_t handed_out = 0;  // kClass: next_unused, clamped to blocks per slab
  bool clamped = false;     // kClass: next_unused exceeded blocks per slab
  uint32_t raw_block_size = 0;  // as read, for messages
  uint32_t raw_span = 0;        // as read, for messages
  uint32_t raw_next_unused = 0;
};

// One acquire snapshot of slab `slab` of an extent with `slab_count` slabs.
inline SlabSnapshot ReadSlab(const SlabDescriptor& d, uint32_t slab, uint32_t slab_count) {
  SlabSnapshot s;
  s.raw_block_size = d.block_size.load(std::memory_order_acquire);
  using Kind = SlabSnapshot::Kind;
  if (s.raw_block_size == kSlabUnassigned) {
    s.kind = Kind::kUnassigned;
  } else if (s.raw_block_size == kSlabLargeTail) {
    s.kind = Kind::kLargeTail;
  } else if (s.raw_block_size == kSlabLargeHead) {
    s.raw_span = d.span_slabs.load(std::memory_order_acquire);
    // The span rule: at least one slab, and not past the extent's end.
    bool ok = s.raw_span >= 1 && slab < slab_count && s.raw_span <= slab_count - slab;
    s.kind = ok ? Kind::kLargeHead : Kind::kDamaged;
    if (ok) s.span = s.raw_span;
  } else if (IsSizeClass(s.raw_block_size)) {
    s.kind = Kind::kClass;
    s.block_size = s.raw_block_size;
    s.raw_next_unused = d.next_unused.load(std::memory_order_relaxed);
    uint32_t per = kSlabSize / s.block_size;
    s.clamped = s.raw_next_unused > per;
    s.handed_out = s.clamped ? per : s.raw_next_unused;
  } else {
    s.kind = Kind::kDamaged;
  }
  return s;
}

}  // namespace structd::shm::internal

#endif  // STRUCTD_SHM_SRC_SLAB_VIEW_H_
