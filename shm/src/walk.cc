#include "structd/shm/walk.h"

#include "absl/strings/str_format.h"

namespace structd::shm {

std::vector<WalkProblem> ForEachInstance(
    const Arena& arena, const std::function<bool(const InstancePtr&)>& fn) {
  std::vector<WalkProblem> problems;
  const ExtentGeometry g = ComputeExtentGeometry(arena.extent_size());
  const uint32_t extents = arena.extent_count();
  if (arena.raw_extent_count() > arena.max_extents()) {
    problems.push_back({Ref(), absl::StrFormat(
        "arena header: extent count %d is more than max_extents %d (the "
        "header is damaged; only the first %d extents are checked)",
        arena.raw_extent_count(), arena.max_extents(), arena.max_extents())});
  }
  for (uint32_t e = 0; e < extents; ++e) {
    absl::StatusOr<uint8_t*> base = arena.ExtentBase(e);
    if (!base.ok()) {
      problems.push_back({Ref(), absl::StrFormat("extent %d: %s", e,
                                                 base.status().message())});
      continue;
    }
    const auto* descs =
        reinterpret_cast<const SlabDescriptor*>(*base + sizeof(ExtentHeader));
    for (uint32_t s = 0; s < g.slab_count; ++s) {
      uint32_t bs = descs[s].block_size.load(std::memory_order_acquire);
      uint32_t slab_off = g.data_offset + s * kSlabSize;
      auto visit = [&](uint32_t off, uint32_t capacity) {
        const auto* h = reinterpret_cast<const InstanceHeader*>(*base + off);
        if (h->type_index.load(std::memory_order_acquire) == 0) return true;
        Ref ref = Ref::Make(e, off, h->generation.load(std::memory_order_acquire));
        return fn(InstancePtr(*base + off, ref, capacity));
      };
      if (bs == kSlabUnassigned || bs == kSlabLargeTail) continue;
      if (bs == kSlabLargeHead) {
        uint32_t span = descs[s].span_slabs.load(std::memory_order_acquire);
        if (span == 0 || span > g.slab_count - s) {
          problems.push_back({Ref(), absl::StrFormat(
              "extent %d slab %d: damaged large span (span %d)", e, s, span)});
          continue;
        }
        if (!visit(slab_off, span * kSlabSize)) return problems;
        s += span - 1;
        continue;
      }
      if (!IsSizeClass(bs)) {
        problems.push_back({Ref(), absl::StrFormat(
            "extent %d slab %d: damaged descriptor (block size %d)", e, s, bs)});
        continue;
      }
      uint32_t used = descs[s].next_unused.load(std::memory_order_relaxed);
      uint32_t per = kSlabSize / bs;
      if (used > per) {
        problems.push_back({Ref(), absl::StrFormat(
            "extent %d slab %d: %d blocks handed out, more than the %d that "
            "fit",
            e, s, used, per)});
        used = per;
      }
      for (uint32_t i = 0; i < used; ++i) {
        if (!visit(slab_off + i * bs, bs)) return problems;
      }
    }
  }
  return problems;
}

}  // namespace structd::shm
