#include "structd/shm/allocator.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "allocator_internal.h"
#include "slab_view.h"
#include "structd/shm/sync.h"

namespace structd::shm {
using internal::Hi;
using internal::kNoSlab;
using internal::Link;
using internal::Lo;
using internal::Pack;

Allocator::Allocator(Arena* arena)
    : arena_(arena), geometry_(ComputeExtentGeometry(arena->extent_size())) {}

absl::StatusOr<Allocator::Block> Allocator::Locate(Loc loc) const {
  uint32_t e = Hi(loc);
  uint32_t off = Lo(loc);
  auto damaged = [&] {
    return absl::DataLossError(absl::StrFormat(
        "arena %s: slab descriptor for r:%x:%x is damaged (run 'structctl "
        "check')",
        arena_->label(), e, off));
  };
  if (e >= bases_.size() || quarantined_extent_[e] ||
      off < geometry_.data_offset ||
      SlabOf(off) >= geometry_.slab_count) {
    return damaged();
  }
  uint32_t slab = SlabOf(off);
  uint32_t in_slab = off - SlabOffset(slab);
  // The owner's record, never the shared descriptor (see SlabState).
  const SlabState& st = State(e, slab);
  uint32_t bs = st.block_size;
  Block b;
  b.loc = loc;
  if (bs == kSlabLargeHead) {
    uint32_t span = st.span;
    if (in_slab != 0 || span == 0 || span > geometry_.slab_count - slab) {
      return damaged();
    }
    b.span = span;
    b.capacity = span * kSlabSize;
    return b;
  }
  if (!IsClassBlockStart(bs, in_slab)) return damaged();
  b.class_size = bs;
  b.capacity = bs;
  return b;
}

absl::StatusOr<std::unique_ptr<Allocator>> Allocator::Adopt(
    Arena* arena, AdoptReport* report) {
  if (arena->access() != Access::kReadWrite) {
    return absl::FailedPreconditionError(absl::StrCat(
        "allocator: arena ", arena->label(),
        " is open read-only (the owner opens it read-write)"));
  }
  std::unique_ptr<Allocator> a(new Allocator(arena));
  AdoptReport local;
  if (absl::Status s = a->Scan(report ? *report : local); !s.ok()) return s;
  return a;
}

absl::Status Allocator::RefreshExtents() {
  uint32_t n = arena_->extent_count();
  while (bases_.size() < n) {
    uint32_t id = static_cast<uint32_t>(bases_.size());
    absl::StatusOr<uint8_t*> base = arena_->ExtentBase(id);
    if (!base.ok()) {
      // Not (yet) mappable, e.g. a count scribbled high: use what we have
      // and look again next time. Adopt() quarantines damaged extents.
      break;
    }
    bases_.push_back(*base);
    quarantined_extent_.push_back(false);
    // Created by this owner's Grow: every slab unassigned.
    slabs_.emplace_back(geometry_.slab_count);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Allocator::FindUnassignedRun(uint32_t n) {
  if (n == 0 || n > geometry_.slab_count) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "arena %s: an instance of %d slabs does not fit an extent of %d "
        "slabs (raise extent_size, or split the struct)",
        arena_->label(), n, geometry_.slab_count));
  }
  for (int pass = 0; pass < 2; ++pass) {
    if (absl::Status s = RefreshExtents(); !s.ok()) return s;
    uint32_t start_extent = pass == 0 ? Hi(scan_hint_) : 0;
    for (uint32_t e = start_extent; e < bases_.size(); ++e) {
      if (quarantined_extent_[e]) continue;
      uint32_t first = (pass == 0 && e == start_extent) ? Lo(scan_hint_) : 0;
      uint32_t run = 0;
      for (uint32_t s = first; s < geometry_.slab_count; ++s) {
        const SlabDescriptor& d = Desc(e, s);
        // Free by the owner's record; a slab whose watermark reached the
        // end of the generation space is never recycled: a recycled block
        // must start above it.
        if (State(e, s).block_size == kSlabUnassigned &&
            d.generation_watermark.load(std::memory_order_relaxed) <
                kGenerationMask - 1) {
          if (++run == n) {
            uint32_t head = s + 1 - n;
            scan_hint_ = Pack(e, head + n);
            return Pack(e, head);
          }
        } else {
          run = 0;
        }
      }
    }
  }
  const uint64_t bytes = arena_->extent_size();
  if (growth_gate_.reserve) {
    if (absl::Status s = growth_gate_.reserve(bytes); !s.ok()) return s;
  }
  absl::StatusOr<uint32_t> grown = arena_->Grow();
  if (!grown.ok()) {
    if (growth_gate_.cancel) growth_gate_.cancel(bytes);
    return grown.status();
  }
  if (absl::Status s = RefreshExtents(); !s.ok()) return s;
  if (*grown >= bases_.size() || quarantined_extent_[*grown]) {
    return absl::InternalError(absl::StrFormat(
        "arena %s: new extent %d could not be mapped", arena_->label(), *grown));
  }
  scan_hint_ = Pack(*grown, n);
  return Pack(*grown, 0);
}

absl::StatusOr<Allocator::Loc> Allocator::TakeClassBlock(size_t cls) {
  ClassState& c = classes_[cls];
  const uint32_t bs = kSizeClasses[cls];
  // 1. The free list. Every link came through shared memory: validate it.
  while (c.free_head != 0) {
    Loc loc = c.free_head;
    absl::StatusOr<Block> located = Locate(loc);
    bool valid = located.ok() && located->class_size == bs;
    if (valid) {
      InstanceHeader& h = HeaderAt(loc);
      valid = h.type_index.load(std::memory_order_acquire) == 0 &&
              (h.flags.load(std::memory_order_relaxed) & kInstanceFreeListed);
      if (valid) {
        c.free_head = Link(h).load(std::memory_order_relaxed);
        --c.free_count;
        h.flags.store(0, std::memory_order_relaxed);
        return loc;
      }
    }
    // Damaged list: drop the rest (those blocks leak until the next Adopt
    // rebuilds the lists from the headers).
    c.free_head = 0;
    c.free_count = 0;
  }
  // 2. Never-used blocks of the current bump slab, then of a new slab.
  for (;;) {
    if (c.bump_slab != kNoSlab) {
      SlabDescriptor& d = Desc(Hi(c.bump_slab), Lo(c.bump_slab));
      SlabState& st = State(Hi(c.bump_slab), Lo(c.bump_slab));
      if (d.next_unused.load(std::memory_order_relaxed) != st.next_unused) {
        ++descriptor_mismatches_;  // written by another process: ours decides
      }
      uint32_t i = st.next_unused;
      if (i < kSlabSize / bs) {
        st.next_unused = i + 1;
        d.next_unused.store(i + 1, std::memory_order_relaxed);
        Loc loc = Pack(Hi(c.bump_slab), SlabOffset(Lo(c.bump_slab)) + i * bs);
        if (HeaderAt(loc).type_index.load(std::memory_order_acquire) != 0) {
          // Never handed out, yet it looks live: a member wrote a header
          // here. Leave it alone rather than overwrite what may be data.
          ++descriptor_mismatches_;
          continue;
        }
        return loc;
      }
      c.bump_slab = kNoSlab;
    }
    absl::StatusOr<uint64_t> slab = FindUnassignedRun(1);
    if (!slab.ok()) return slab.status();
    uint32_t e = Hi(*slab);
    uint32_t s = Lo(*slab);
    SlabDescriptor& d = Desc(e, s);
    if (d.block_size.load(std::memory_order_relaxed) != kSlabUnassigned) {
      ++descriptor_mismatches_;  // a member marked our free slab as in use
    }
    State(e, s) = SlabState{bs, 0, 0};
    // Recycled memory may hold anything. Give every block a clean header,
    // with a generation above any this slab ever had, *before* the
    // descriptor makes the blocks addressable: a stale ref that lands here
    // then sees a free block, never garbage that might pass as live.
    uint32_t first_gen =
        d.generation_watermark.load(std::memory_order_relaxed) + 1;
    for (uint32_t off = 0; off + bs <= kSlabSize; off += bs) {
      InstanceHeader& h = HeaderAt(Pack(e, SlabOffset(s) + off));
      h.type_index.store(0, std::memory_order_relaxed);
      h.refcount.store(0, std::memory_order_relaxed);
      h.flags.store(0, std::memory_order_relaxed);
      h.generation.store(first_gen, std::memory_order_relaxed);
    }
    d.next_unused.store(0, std::memory_order_relaxed);
    d.live.store(0, std::memory_order_relaxed);
    d.span_slabs.store(0, std::memory_order_relaxed);
    d.block_size.store(bs, std::memory_order_release);
    c.bump_slab = *slab;
  }
}

absl::StatusOr<Allocator::Loc> Allocator::TakeLargeSpan(uint32_t slabs) {
  absl::StatusOr<uint64_t> run = FindUnassignedRun(slabs);
  if (!run.ok()) return run.status();
  uint32_t e = Hi(*run);
  uint32_t head = Lo(*run);
  SlabDescriptor& d = Desc(e, head);
  // Clean header first, descriptors after (see TakeClassBlock).
  Loc loc = Pack(e, SlabOffset(head));
  InstanceHeader& h = HeaderAt(loc);
  h.type_index.store(0, std::memory_order_relaxed);
  h.refcount.store(0, std::memory_order_relaxed);
  h.flags.store(0, std::memory_order_relaxed);
  h.generation.store(d.generation_watermark.load(std::memory_order_relaxed) + 1,
                     std::memory_order_relaxed);
  for (uint32_t t = 1; t < slabs; ++t) {
    Desc(e, head + t).span_slabs.store(0, std::memory_order_relaxed);
    Desc(e, head + t).block_size.store(kSlabLargeTail,
                                       std::memory_order_release);
  }
  d.span_slabs.store(slabs, std::memory_order_relaxed);
  d.next_unused.store(1, std::memory_order_relaxed);
  d.live.store(0, std::memory_order_relaxed);
  d.block_size.store(kSlabLargeHead, std::memory_order_release);
  State(e, head) = SlabState{kSlabLargeHead, slabs, 1};
  for (uint32_t t = 1; t < slabs; ++t) State(e, head + t) = SlabState{kSlabLargeTail, 0, 0};
  return loc;
}

Ref Allocator::Publish(Loc loc, uint32_t capacity, uint32_t type_index,
                       const Layout& layout) {
  uint32_t e = Hi(loc);
  uint32_t off = Lo(loc);
  InstanceHeader& h = HeaderAt(loc);
  uint8_t* payload = reinterpret_cast<uint8_t*>(&h) + kInstanceHeaderSize;
  // Zero every field (and the free-list link) before anyone can see it.
  std::memset(payload, 0, std::max<size_t>(layout.size(), sizeof(uint64_t)));
  for (uint32_t m : layout.mutex_offsets()) MutexField::Initialize(payload + m);
  h.refcount.store(1, std::memory_order_relaxed);
  h.flags.store(0, std::memory_order_relaxed);
  uint32_t gen = h.generation.load(std::memory_order_relaxed);
  SlabDescriptor& d = Desc(e, SlabOf(off));
  d.live.store(d.live.load(std::memory_order_relaxed) + 1,
               std::memory_order_relaxed);
  live_block_bytes_ += capacity;
  ++live_instances_;
  CountLive(type_index, capacity);
  // Publication: a reader that sees type_index (acquire) sees all of the
  // above (invariant 2).
  h.type_index.store(type_index, std::memory_order_release);
  return Ref::Make(e, off, gen);
}

absl::StatusOr<Ref> Allocator::Allocate(uint32_t type_index,
                                        const Layout& layout) {
  if (type_index == 0) {
    return absl::InvalidArgumentError(
        "allocate: type index 0 is reserved (register the type first)");
  }
  if (absl::Status s = RefreshExtents(); !s.ok()) return s;
  uint64_t block = InstanceBlockBytes(layout.size());
  size_t cls = SizeClassFor(block);
  uint32_t span = static_cast<uint32_t>((block + kSlabSize - 1) / kSlabSize);
  absl::StatusOr<Loc> loc =
      cls < kNumSizeClasses ? TakeClassBlock(cls) : TakeLargeSpan(span);
  if (!loc.ok()) return loc.status();
  uint32_t capacity =
      cls < kNumSizeClasses ? kSizeClasses[cls] : span * kSlabSize;
  return Publish(*loc, capacity, type_index, layout);
}

absl::Status Allocator::AllocateBatch(uint32_t type_index,
                                      const Layout& layout, size_t count,
                                      std::vector<Ref>& out) {
  size_t before = out.size();
  out.reserve(before + count);
  for (size_t i = 0; i < count; ++i) {
    absl::StatusOr<Ref> r = Allocate(type_index, layout);
    if (!r.ok()) {
      // Roll back: these instances were never handed out.
      for (size_t j = before; j < out.size(); ++j) {
        Loc loc = Pack(out[j].extent_id(), out[j].offset());
        HeaderAt(loc).refcount.store(0, std::memory_order_relaxed);
        if (absl::StatusOr<Block> b = Locate(loc); b.ok()) FreeBlock(*b);
      }
      out.resize(before);
      return r.status();
    }
    out.push_back(*r);
  }
  return absl::OkStatus();
}

namespace {

// Honest writers change a refcount a few times per operation at most; one
// that keeps changing under every compare-and-swap is being scribbled by a
// member, and must not hold the daemon's thread forever.
constexpr int kMaxRefcountAttempts = 1000;

absl::Status RefcountKeepsChanging(Ref ref) {
  return absl::AbortedError(absl::StrFormat(
      "ref %s: its refcount keeps changing under the daemon (a member of the "
      "channel is writing instance headers; run 'structctl check')",
      ref.ToString()));
}

}  // namespace

absl::Status Allocator::Retain(Ref ref) {
  absl::StatusOr<InstancePtr> inst = arena_->Resolve(ref);
  if (!inst.ok()) return inst.status();
  InstanceHeader& h = inst->header();
  // Read-modify-writes, not a load and a store: the sole owner of an
  // instance may take its refcount from 1 to 0 at any moment to recycle
  // it in place (shm/local_recycle.h). Whichever goes first wins: from 0
  // nothing is retained, and once this increment is in, the owner's
  // claim fails.
  uint32_t rc = h.refcount.load(std::memory_order_acquire);
  for (int attempt = 0;; ++attempt) {
    if (rc == 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "ref %s: refcount is zero, the instance is being freed (retain it "
          "before releasing the last reference)",
          ref.ToString()));
    }
    if (rc == UINT32_MAX) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "ref %s: refcount at its maximum of %d (release references first)",
          ref.ToString(), UINT32_MAX));
    }
    if (h.refcount.compare_exchange_weak(rc, rc + 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
      break;
    }
    if (attempt == kMaxRefcountAttempts) return RefcountKeepsChanging(ref);
  }
  // An owner that recycled the block between Resolve and the increment
  // published the new generation before the refcount this increment
  // followed: the reference is to an instance that is gone.
  if ((h.generation.load(std::memory_order_acquire) & kGenerationMask) !=
      ref.generation_tag()) {
    h.refcount.fetch_sub(1, std::memory_order_acq_rel);
    return absl::NotFoundError(absl::StrFormat(
        "ref %s: the instance was freed (stale reference; keep an owned "
        "reference while you use an instance)",
        ref.ToString()));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Allocator::DropOne(Ref ref, Loc* loc) {
  absl::StatusOr<InstancePtr> inst = arena_->Resolve(ref);
  if (!inst.ok()) return inst.status();
  if (absl::Status s = RefreshExtents(); !s.ok()) return s;
  if (ref.extent_id() >= bases_.size() ||
      quarantined_extent_[ref.extent_id()]) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "ref %s: its extent is quarantined as damaged (run 'structctl "
        "check')",
        ref.ToString()));
  }
  InstanceHeader& h = inst->header();
  uint32_t rc = h.refcount.load(std::memory_order_acquire);
  for (int attempt = 0;; ++attempt) {  // a read-modify-write: see Retain
    if (rc == 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "ref %s: refcount already zero (released more often than retained, "
          "or the arena is damaged; run 'structctl check')",
          ref.ToString()));
    }
    if (h.refcount.compare_exchange_weak(rc, rc - 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
      break;
    }
    if (attempt == kMaxRefcountAttempts) return RefcountKeepsChanging(ref);
  }
  *loc = Pack(ref.extent_id(), ref.offset());
  return rc == 1;
}

absl::StatusOr<ReleaseResult> Allocator::Release(Ref ref,
                                                 const TypeLookup& types) {
  Loc loc = 0;
  absl::StatusOr<bool> zero = DropOne(ref, &loc);
  if (!zero.ok()) return zero.status();
  if (!*zero) return ReleaseResult{};
  return FreeCascade(loc, types);
}

absl::StatusOr<ReleaseResult> Allocator::FinishCondemned(
    Ref ref, const TypeLookup& types) {
  absl::StatusOr<InstancePtr> inst = arena_->Resolve(ref);
  if (!inst.ok()) return inst.status();
  if (inst->header().refcount.load(std::memory_order_relaxed) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "ref %s: refcount is not zero; release it instead", ref.ToString()));
  }
  return FreeCascade(Pack(ref.extent_id(), ref.offset()), types);
}

absl::StatusOr<ReleaseResult> Allocator::SetRefcount(Ref ref, uint32_t count,
                                                     const TypeLookup& types) {
  absl::StatusOr<InstancePtr> inst = arena_->Resolve(ref);
  if (!inst.ok()) return inst.status();
  inst->header().refcount.store(count, std::memory_order_relaxed);
  if (count != 0) return ReleaseResult{};
  return FreeCascade(Pack(ref.extent_id(), ref.offset()), types);
}

absl::StatusOr<ReleaseResult> Allocator::FreeCascade(Loc first,
                                                     const TypeLookup& types) {
  ReleaseResult result;
  // Instances whose refcount reached zero and still need freeing. A heap
  // vector, not recursion: depth is unbounded. Most releases free one
  // instance with no refs to follow and never grow it.
  std::vector<Loc> pending;
  for (Loc loc = first;;) {
    absl::StatusOr<Block> block = Locate(loc);
    if (!block.ok()) {
      ++result.damaged;  // leave it allocated rather than free into damage
    } else {
      InstanceHeader& h = HeaderAt(loc);
      uint32_t type_index = h.type_index.load(std::memory_order_acquire);
      const Layout* layout = types ? types(type_index) : nullptr;
      if (layout != nullptr &&
          uint64_t{kInstanceHeaderSize} + layout->size() > block->capacity) {
        // The type index is shared memory: it names a layout bigger than
        // the block. Following its ref offsets would write past the block.
        ++result.damaged;
        layout = nullptr;
      }
      if (layout != nullptr) {
        uint8_t* payload = reinterpret_cast<uint8_t*>(&h) + kInstanceHeaderSize;
        for (uint32_t off : layout->ref_offsets()) {
          Ref child = Ref::FromBits(
              std::atomic_ref<uint64_t>(
                  *reinterpret_cast<uint64_t*>(payload + off))
                  .exchange(0, std::memory_order_acq_rel));
          if (child.is_null()) continue;
          Loc child_loc = 0;
          absl::StatusOr<bool> zero = DropOne(child, &child_loc);
          if (!zero.ok()) {
            ++result.dangling;
          } else if (*zero) {
            pending.push_back(child_loc);
          }
        }
      }
      FreeBlock(*block);
      ++result.freed;
    }
    if (pending.empty()) break;
    loc = pending.back();
    pending.pop_back();
  }
  damage_refused_ += result.dangling + result.damaged;
  return result;
}

void Allocator::CountLive(uint32_t type_index, uint64_t bytes) {
  TypeUse& use = live_by_type_[type_index];
  ++use.instances;
  use.bytes += bytes;
}

void Allocator::FreeBlock(const Block& block) {
  const Loc loc = block.loc;
  const uint32_t e = Hi(loc);
  const uint32_t off = Lo(loc);
  InstanceHeader& h = HeaderAt(loc);
  SlabDescriptor& d = Desc(e, SlabOf(off));
  // Generation first, type index second: an owner killed between the two
  // leaves a live-looking instance with refcount 0, which Adopt reports as
  // condemned, never a free block that still carries the old generation.
  uint32_t gen = h.generation.load(std::memory_order_relaxed) + 1;
  const uint32_t type_index = h.type_index.load(std::memory_order_relaxed);
  h.generation.store(gen, std::memory_order_release);
  h.type_index.store(0, std::memory_order_release);
  if (auto t = live_by_type_.find(type_index); t != live_by_type_.end()) {
    t->second.instances -= std::min<uint64_t>(t->second.instances, 1);
    t->second.bytes -= std::min<uint64_t>(t->second.bytes, block.capacity);
    if (t->second.instances == 0) live_by_type_.erase(t);
  }
  h.refcount.store(0, std::memory_order_relaxed);
  if (d.generation_watermark.load(std::memory_order_relaxed) < gen) {
    d.generation_watermark.store(gen, std::memory_order_relaxed);
  }
  uint32_t live = d.live.load(std::memory_order_relaxed);
  if (live > 0) d.live.store(live - 1, std::memory_order_relaxed);
  if (live_instances_ > 0) --live_instances_;
  live_block_bytes_ -= std::min<uint64_t>(live_block_bytes_, block.capacity);
  if (block.span != 0) {
    h.flags.store(0, std::memory_order_relaxed);
    // Return the span's slabs, head first (so a racing resolver sees a
    // freed head, not a damaged one), using the validated span length.
    uint32_t head = SlabOf(off);
    for (uint32_t t = 0; t < block.span; ++t) {
      Desc(e, head + t).block_size.store(kSlabUnassigned,
                                         std::memory_order_release);
      Desc(e, head + t).span_slabs.store(0, std::memory_order_relaxed);
      State(e, head + t) = SlabState{};
    }
    scan_hint_ = std::min(scan_hint_, Pack(e, head));
    return;
  }
  if (gen > kGenerationMask) {
    // The generation tag would wrap: retire the block for good.
    h.flags.store(kInstanceRetired, std::memory_order_relaxed);
    return;
  }
  size_t cls = SizeClassFor(block.class_size);  // validated: a real class
  Link(h).store(classes_[cls].free_head, std::memory_order_relaxed);
  h.flags.store(kInstanceFreeListed, std::memory_order_relaxed);
  classes_[cls].free_head = loc;
  ++classes_[cls].free_count;
}

}  // namespace structd::shm
