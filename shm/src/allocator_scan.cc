// Allocator: rebuilding the owner's state by scanning an arena (Adopt),
// and the read-only reports on it (Stats, DescriptorMismatches).

#include "structd/shm/allocator.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "allocator_internal.h"
#include "slab_view.h"
#include "structd/shm/sync.h"

namespace structd::shm {
using internal::kNoSlab;
using internal::Link;
using internal::Lo;
using internal::Pack;

absl::Status Allocator::Scan(AdoptReport& report) {
  uint32_t n = arena_->extent_count();
  for (uint32_t e = 0; e < n; ++e) {
    absl::StatusOr<uint8_t*> base = arena_->ExtentBase(e);
    bases_.push_back(base.ok() ? *base : nullptr);
    quarantined_extent_.push_back(!base.ok());
    slabs_.emplace_back(geometry_.slab_count,
                        SlabState{base.ok() ? kSlabUnassigned : kQuarantined, 0, 0});
    if (!base.ok()) {
      report.problems.push_back(absl::StrFormat(
          "extent %d: unusable, kept out of allocation: %s", e,
          base.status().message()));
    }
  }
  for (uint32_t e = 0; e < n; ++e) {
    if (quarantined_extent_[e]) continue;
    for (uint32_t s = 0; s < geometry_.slab_count; ++s) {
      SlabDescriptor& d = Desc(e, s);
      // Generations seen in headers must stay at or below the watermark,
      // or a recycled slab could repeat one.
      uint32_t watermark = d.generation_watermark.load(std::memory_order_relaxed);
      using Kind = internal::SlabSnapshot::Kind;
      const internal::SlabSnapshot snap = internal::ReadSlab(d, s, geometry_.slab_count);
      const uint32_t bs = snap.raw_block_size;
      if (snap.kind == Kind::kUnassigned) continue;
      if (snap.kind == Kind::kClass) {
        uint32_t per = kSlabSize / bs;
        uint32_t used = snap.handed_out;
        if (snap.clamped) {
          report.problems.push_back(absl::StrFormat(
              "extent %d slab %d: next_unused %d exceeds %d blocks; slab "
              "treated as full",
              e, s, snap.raw_next_unused, per));
          d.next_unused.store(per, std::memory_order_relaxed);
        }
        size_t cls = SizeClassFor(bs);
        uint32_t live = 0;
        for (uint32_t i = 0; i < used; ++i) {
          Loc loc = Pack(e, SlabOffset(s) + i * bs);
          InstanceHeader& h = HeaderAt(loc);
          watermark = std::max(watermark,
                               h.generation.load(std::memory_order_relaxed));
          uint32_t flags = h.flags.load(std::memory_order_relaxed);
          if (h.type_index.load(std::memory_order_acquire) == 0) {
            if (flags & kInstanceRetired) continue;
            if (!(flags & kInstanceFreeListed)) {
              // Free but not listed: an owner died between taking it and
              // publishing it, or between freeing and listing it. Bump the
              // generation so no ref it may have been issued under matches.
              uint32_t g = h.generation.load(std::memory_order_relaxed) + 1;
              h.generation.store(g, std::memory_order_relaxed);
              watermark = std::max(watermark, g);
              if (g > kGenerationMask) {
                h.flags.store(kInstanceRetired, std::memory_order_relaxed);
                continue;
              }
            }
            Link(h).store(classes_[cls].free_head, std::memory_order_relaxed);
            h.flags.store(kInstanceFreeListed, std::memory_order_relaxed);
            classes_[cls].free_head = loc;
            ++classes_[cls].free_count;
            ++report.free_blocks;
          } else {
            ++live;
            ++live_instances_;
            live_block_bytes_ += bs;
            CountLive(h.type_index.load(std::memory_order_relaxed), bs);
            ++report.live_instances;
            if (h.refcount.load(std::memory_order_relaxed) == 0) {
              report.condemned.push_back(Ref::Make(
                  e, Lo(loc), h.generation.load(std::memory_order_relaxed)));
            }
          }
        }
        d.live.store(live, std::memory_order_relaxed);
        d.generation_watermark.store(watermark, std::memory_order_relaxed);
        State(e, s) = SlabState{bs, 0, used};
        if (used < per && classes_[cls].bump_slab == kNoSlab) {
          classes_[cls].bump_slab = Pack(e, s);
        }
      } else if (bs == kSlabLargeHead) {
        uint32_t span = snap.raw_span;
        bool ok = snap.kind == Kind::kLargeHead;
        for (uint32_t t = 1; ok && t < span; ++t) {
          ok = Desc(e, s + t).block_size.load(std::memory_order_relaxed) ==
               kSlabLargeTail;
        }
        if (!ok) {
          report.problems.push_back(absl::StrFormat(
              "extent %d slab %d: damaged large span (span %d); slab "
              "quarantined",
              e, s, span));
          State(e, s).block_size = kQuarantined;
          continue;
        }
        InstanceHeader& h = HeaderAt(Pack(e, SlabOffset(s)));
        watermark =
            std::max(watermark, h.generation.load(std::memory_order_relaxed));
        d.generation_watermark.store(watermark, std::memory_order_relaxed);
        if (h.type_index.load(std::memory_order_acquire) == 0) {
          for (uint32_t t = span; t-- > 0;) {
            Desc(e, s + t).block_size.store(kSlabUnassigned,
                                            std::memory_order_release);
          }
          ++report.free_blocks;
        } else {
          State(e, s) = SlabState{kSlabLargeHead, span, 1};
          for (uint32_t t = 1; t < span; ++t) State(e, s + t) = SlabState{kSlabLargeTail, 0, 0};
          ++live_instances_;
          live_block_bytes_ += uint64_t{span} * kSlabSize;
          CountLive(h.type_index.load(std::memory_order_relaxed), uint64_t{span} * kSlabSize);
          ++report.live_instances;
          ++report.large_spans;
          if (h.refcount.load(std::memory_order_relaxed) == 0) {
            report.condemned.push_back(Ref::Make(
                e, SlabOffset(s), h.generation.load(std::memory_order_relaxed)));
          }
        }
        s += span - 1;
      } else if (bs == kSlabLargeTail) {
        report.problems.push_back(absl::StrFormat(
            "extent %d slab %d: large-span tail without a head; slab "
            "quarantined",
            e, s));
        State(e, s).block_size = kQuarantined;
      } else {
        report.problems.push_back(absl::StrFormat(
            "extent %d slab %d: damaged descriptor (block size %d); slab "
            "quarantined",
            e, s, bs));
        State(e, s).block_size = kQuarantined;
      }
    }
  }
  return absl::OkStatus();
}


AllocatorStats Allocator::Stats() const {
  AllocatorStats s;
  s.live_instances = live_instances_;
  s.live_block_bytes = live_block_bytes_;
  for (size_t i = 0; i < kNumSizeClasses; ++i) {
    s.free_blocks += classes_[i].free_count;
    s.free_block_bytes += classes_[i].free_count * kSizeClasses[i];
  }
  s.descriptor_mismatches = descriptor_mismatches_;
  s.damage_refused = damage_refused_;
  for (uint32_t e = 0; e < bases_.size(); ++e) {
    ++s.extents;
    s.extent_bytes += arena_->extent_size();
    if (quarantined_extent_[e]) continue;
    for (uint32_t sl = 0; sl < geometry_.slab_count; ++sl) {
      uint32_t bs = State(e, sl).block_size;
      if (bs == kSlabUnassigned) {
        ++s.unassigned_slabs;
      } else if (bs == kSlabLargeHead || bs == kSlabLargeTail) {
        ++s.large_slabs;
      } else if (bs != kQuarantined) {
        ++s.class_slabs;
      }
    }
  }
  return s;
}


std::vector<std::string> Allocator::DescriptorMismatches() const {
  std::vector<std::string> out;
  for (uint32_t e = 0; e < bases_.size(); ++e) {
    if (quarantined_extent_[e]) continue;
    for (uint32_t sl = 0; sl < geometry_.slab_count; ++sl) {
      const SlabState& st = State(e, sl);
      if (st.block_size == kQuarantined) continue;
      const SlabDescriptor& d = Desc(e, sl);
      uint32_t bs = d.block_size.load(std::memory_order_relaxed);
      std::string what;
      if (bs != st.block_size) {
        what = absl::StrFormat("block size %d, but the daemon's record says %d", bs,
                               st.block_size);
      } else if (bs == kSlabLargeHead &&
                 d.span_slabs.load(std::memory_order_relaxed) != st.span) {
        what = absl::StrFormat("span of %d slabs, but the daemon's record says %d",
                               d.span_slabs.load(std::memory_order_relaxed), st.span);
      } else if (IsSizeClass(bs) && d.next_unused.load(std::memory_order_relaxed) != st.next_unused) {
        what = absl::StrFormat("%d blocks handed out, but the daemon's record says %d",
                               d.next_unused.load(std::memory_order_relaxed), st.next_unused);
      }
      if (!what.empty()) {
        out.push_back(absl::StrFormat(
            "extent %d slab %d: its descriptor says %s (written by another process; the "
            "daemon allocates by its record)",
            e, sl, what));
      }
    }
  }
  return out;
}

}  // namespace structd::shm
