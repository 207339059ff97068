#include "structd/shm/walk.h"

#include "absl/strings/str_format.h"
#include "slab_view.h"

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
    using Kind = internal::SlabSnapshot::Kind;
    for (uint32_t s = 0; s < g.slab_count; ++s) {
      const internal::SlabSnapshot snap = internal::ReadSlab(descs[s], s, g.slab_count);
      uint32_t slab_off = g.data_offset + s * kSlabSize;
      auto visit = [&](uint32_t off, uint32_t capacity) {
        const auto* h = reinterpret_cast<const InstanceHeader*>(*base + off);
        if (h->type_index.load(std::memory_order_acquire) == 0) return true;
        Ref ref = Ref::Make(e, off, h->generation.load(std::memory_order_acquire));
        return fn(InstancePtr(*base + off, ref, capacity));
      };
      switch (snap.kind) {
        case Kind::kUnassigned:
        case Kind::kLargeTail:
          break;
        case Kind::kLargeHead:
          if (!visit(slab_off, snap.span * kSlabSize)) return problems;
          s += snap.span - 1;
          break;
        case Kind::kDamaged:
          problems.push_back({Ref(), snap.raw_block_size == kSlabLargeHead
                                         ? absl::StrFormat(
                                               "extent %d slab %d: damaged large span (span %d)",
                                               e, s, snap.raw_span)
                                         : absl::StrFormat(
                                               "extent %d slab %d: damaged descriptor (block "
                                               "size %d)",
                                               e, s, snap.raw_block_size)});
          break;
        case Kind::kClass:
          if (snap.clamped) {
            problems.push_back({Ref(), absl::StrFormat(
                "extent %d slab %d: %d blocks handed out, more than the %d that fit", e, s,
                snap.raw_next_unused, snap.handed_out)});
          }
          for (uint32_t i = 0; i < snap.handed_out; ++i) {
            if (!visit(slab_off + i * snap.block_size, snap.block_size)) return problems;
          }
          break;
      }
    }
  }
  return problems;
}

}  // namespace structd::shm
