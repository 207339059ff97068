#include "structd/shm/allocator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include <set>

#include "structd/shm/field.h"
#include "structd/shm/local_recycle.h"
#include "structd/shm/sync.h"
#include "testing/temp_dir.h"

namespace structd::shm {
namespace {

using ::testing::HasSubstr;

class AllocatorTest : public ::testing::Test {
 protected:
  void Init(uint32_t max_extents = 4, uint64_t extent_size = 256 * 1024) {
    ArenaOptions o;
    o.extent_size = extent_size;
    o.max_extents = max_extents;
    path_ = dir_.Sub("arena" + std::to_string(arenas_++));
    auto a = Arena::Create(path_, o);
    ASSERT_TRUE(a.ok()) << a.status();
    arena_ = std::move(*a);
    auto alloc = Allocator::Adopt(arena_.get());
    ASSERT_TRUE(alloc.ok()) << alloc.status();
    alloc_ = std::move(*alloc);
  }
  void SetUp() override {
    Init();
    node_ = *Layout::Compute({FieldSpec::Scalar("value", FieldKind::kU64),
                              FieldSpec::Ref("next"),
                              FieldSpec::Ref("other")});
    small_ = *Layout::Compute({FieldSpec::Array("data", FieldKind::kU8, 48)});
  }
  Allocator::TypeLookup Types() {
    return [this](uint32_t i) -> const Layout* {
      if (i == 1) return &node_;
      if (i == 2) return &small_;
      return nullptr;
    };
  }
  uint32_t Refcount(Ref r) {
    auto inst = arena_->Resolve(r);
    EXPECT_TRUE(inst.ok()) << inst.status();
    return inst.ok() ? inst->header().refcount.load() : 0;
  }

  structd::testing::TempDir dir_;
  int arenas_ = 0;
  std::string path_;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Allocator> alloc_;
  Layout node_, small_;
};

TEST_F(AllocatorTest, NewInstanceIsZeroedWithRefcountOne) {
  auto r = alloc_->Allocate(2, small_);
  ASSERT_TRUE(r.ok()) << r.status();
  auto inst = arena_->Resolve(*r);
  ASSERT_TRUE(inst.ok());
  EXPECT_EQ(inst->header().refcount.load(), 1u);
  EXPECT_EQ(inst->type_index(), 2u);
  // Dirty it, free it, and get the same block back: zero again.
  std::memset(inst->payload(), 0xAB, small_.size());
  ASSERT_TRUE(alloc_->Release(*r, Types()).ok());
  auto r2 = alloc_->Allocate(2, small_);
  ASSERT_TRUE(r2.ok());
  ASSERT_EQ(r2->offset(), r->offset());
  auto inst2 = arena_->Resolve(*r2);
  ASSERT_TRUE(inst2.ok());
  for (uint32_t i = 0; i < small_.size(); ++i) {
    ASSERT_EQ(inst2->payload()[i], 0) << "byte " << i;
  }
}

TEST_F(AllocatorTest, ReuseBumpsTheGeneration) {
  auto r = alloc_->Allocate(1, node_);
  ASSERT_TRUE(r.ok());
  uint32_t gen = r->generation_tag();
  ASSERT_TRUE(alloc_->Release(*r, Types()).ok());
  auto r2 = alloc_->Allocate(1, node_);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->offset(), r->offset());
  EXPECT_EQ(r2->generation_tag(), gen + 1);
}

// ---- Recycling in place by the sole owner (local_recycle.h) ----

TEST_F(AllocatorTest, ASoleOwnerRecyclesInPlaceWithTheNextGenerationZeroed) {
  auto r = alloc_->Allocate(2, small_);
  ASSERT_TRUE(r.ok()) << r.status();
  auto inst = arena_->Resolve(*r);
  ASSERT_TRUE(inst.ok());
  std::memset(inst->payload(), 0xAB, small_.size());
  std::optional<InstancePtr> next = RecycleSoleInstance(*inst, 2, small_.size());
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->block(), inst->block()) << "the same block";
  EXPECT_EQ(next->ref().generation_tag(), r->generation_tag() + 1);
  EXPECT_EQ(arena_->Resolve(*r).status().code(), absl::StatusCode::kNotFound)
      << "the old ref is stale";
  ASSERT_TRUE(arena_->Resolve(next->ref()).ok());
  EXPECT_EQ(next->header().refcount.load(), 1u);
  EXPECT_EQ(next->type_index(), 2u);
  for (uint32_t i = 0; i < small_.size(); ++i) ASSERT_EQ(next->payload()[i], 0) << i;
  // What names the block finds the new instance; the allocator frees it.
  auto current = arena_->ResolveCurrent(*r);
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_EQ(current->ref(), next->ref());
  ASSERT_TRUE(alloc_->Release(next->ref(), Types()).ok());
  EXPECT_EQ(arena_->ResolveCurrent(*r).status().code(), absl::StatusCode::kNotFound)
      << "a free block has no current instance";
  EXPECT_EQ(alloc_->Stats().live_instances, 0u);
}

TEST_F(AllocatorTest, RecycleIsRefusedUnlessTheCallerHoldsTheOnlyReference) {
  auto r = alloc_->Allocate(2, small_);
  ASSERT_TRUE(r.ok());
  auto inst = arena_->Resolve(*r);
  ASSERT_TRUE(inst.ok());
  inst->payload()[0] = 7;
  // Another reference (another session's, a root's, a field's).
  ASSERT_TRUE(alloc_->Retain(*r).ok());
  EXPECT_FALSE(RecycleSoleInstance(*inst, 2, small_.size()).has_value());
  EXPECT_EQ(Refcount(*r), 2u) << "nothing changed";
  EXPECT_EQ(inst->payload()[0], 7);
  // Another type, or a payload that does not fit the block.
  ASSERT_TRUE(alloc_->Release(*r, Types()).ok());
  EXPECT_FALSE(RecycleSoleInstance(*inst, 1, small_.size()).has_value());
  EXPECT_FALSE(RecycleSoleInstance(*inst, 2, 1 << 20).has_value());
  // Freed: the ref is stale (even once the block is reused).
  ASSERT_TRUE(alloc_->Release(*r, Types()).ok());
  EXPECT_FALSE(RecycleSoleInstance(*inst, 2, small_.size()).has_value());
  auto again = alloc_->Allocate(2, small_);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->offset(), r->offset());
  EXPECT_FALSE(RecycleSoleInstance(*inst, 2, small_.size()).has_value());
  EXPECT_EQ(Refcount(*again), 1u);
}

// The daemon retains (another session takes a reference) while the owner
// recycles: either the retain comes first and the recycle is refused, or
// the recycle comes first and the retain sees a stale ref. Never a
// reference to the new instance under the old ref's name.
TEST_F(AllocatorTest, ARetainRacingARecycleEitherWinsOrSeesAStaleRef) {
  auto r = alloc_->Allocate(2, small_);
  ASSERT_TRUE(r.ok());
  auto first = arena_->Resolve(*r);
  ASSERT_TRUE(first.ok());
  std::atomic<uint64_t> current{r->bits()};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> recycled{0};
  uint64_t refused = 0;  // the owner thread's
  std::thread owner([&] {
    InstancePtr mine = *first;
    while (!stop.load()) {
      if (auto next = RecycleSoleInstance(mine, 2, small_.size())) {
        mine = *next;
        current.store(mine.ref().bits());
        ++recycled;
      } else {
        ++refused;
      }
    }
  });
  uint64_t retained = 0, stale = 0;
  for (int i = 0; i < 200000 || recycled == 0 || retained == 0; ++i) {
    Ref seen = Ref::FromBits(current.load());
    absl::Status s = alloc_->Retain(seen);
    if (s.ok()) {
      ++retained;
      // While held, the instance is the one retained: the owner cannot
      // recycle it from under this reference.
      auto inst = arena_->Resolve(seen);
      ASSERT_TRUE(inst.ok()) << "retained " << seen.ToString() << " but it is gone";
      ASSERT_GE(inst->header().refcount.load(), 2u);
      ASSERT_TRUE(alloc_->Release(seen, Types()).ok());
    } else {
      ASSERT_TRUE(absl::IsNotFound(s) || absl::IsFailedPrecondition(s)) << s;
      ++stale;
    }
    if (i > 5000000) break;
  }
  stop.store(true);
  owner.join();
  EXPECT_GT(recycled.load(), 0u);
  EXPECT_GT(retained, 0u);
  Ref last = Ref::FromBits(current.load());
  EXPECT_EQ(Refcount(last), 1u) << "the owner's one reference, exactly";
  EXPECT_EQ(alloc_->Stats().live_instances, 1u);
  RecordProperty("stale_retains", static_cast<int>(stale));
  RecordProperty("refused_recycles", static_cast<int>(refused));
}

TEST_F(AllocatorTest, DistinctLiveInstancesNeverShareABlock) {
  std::set<uint64_t> seen;
  std::vector<Ref> refs;
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, 3000, refs).ok());
  for (Ref r : refs) {
    EXPECT_TRUE(seen.insert(uint64_t{r.extent_id()} << 32 | r.offset()).second);
  }
  EXPECT_EQ(alloc_->Stats().live_instances, 3000u);
}

TEST_F(AllocatorTest, ExhaustionIsResourceExhaustedAndBatchIsAllOrNothing) {
  Init(/*max_extents=*/1, /*extent_size=*/128 * 1024);
  // One extent of 128 KiB holds one 64 KiB slab.
  std::vector<Ref> refs;
  absl::Status s = alloc_->AllocateBatch(1, node_, 100000, refs);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("extents"));
  EXPECT_TRUE(refs.empty());
  EXPECT_EQ(alloc_->Stats().live_instances, 0u);
  // Everything rolled back is reusable.
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, kSlabSize / 48, refs).ok());
  EXPECT_EQ(alloc_->Allocate(1, node_).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(AllocatorTest, GrowsTheArenaWhenFull) {
  EXPECT_EQ(arena_->extent_count(), 1u);
  std::vector<Ref> refs;
  // 256 KiB extents hold 3 slabs: 4 slabs of 64-byte blocks need 2 extents.
  ASSERT_TRUE(alloc_->AllocateBatch(2, small_, 4 * kSlabSize / 64, refs).ok());
  EXPECT_EQ(arena_->extent_count(), 2u);
}

TEST_F(AllocatorTest, LargeInstancesUseWholeSlabSpans) {
  Layout big = *Layout::Compute({FieldSpec::Bytes("blob", 40 * 1024)});
  auto r = alloc_->Allocate(3, big);
  ASSERT_TRUE(r.ok()) << r.status();
  auto inst = arena_->Resolve(*r);
  ASSERT_TRUE(inst.ok()) << inst.status();
  AllocatorStats st = alloc_->Stats();
  EXPECT_EQ(st.large_slabs, 2u);
  ASSERT_TRUE(alloc_->Release(*r, Types()).ok());
  EXPECT_EQ(alloc_->Stats().large_slabs, 0u);
  EXPECT_EQ(arena_->Resolve(*r).status().code(), absl::StatusCode::kNotFound);
  // The freed span is recycled into a size class; the old ref stays stale.
  std::vector<Ref> refs;
  ASSERT_TRUE(alloc_->AllocateBatch(2, small_, 3 * kSlabSize / 64, refs).ok());
  EXPECT_FALSE(arena_->Resolve(*r).ok());
  auto r2 = alloc_->Allocate(3, big);
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(arena_->Resolve(*r).ok());
}

TEST_F(AllocatorTest, ABlockWhoseGenerationIsExhaustedIsRetiredAlone) {
  auto hot = alloc_->Allocate(1, node_);
  auto neighbor = alloc_->Allocate(1, node_);
  ASSERT_TRUE(hot.ok() && neighbor.ok());
  // Pretend the block was reused 2^26 - 1 times already.
  arena_->Resolve(*hot)->header().generation.store(kGenerationMask);
  Ref hot_now = Ref::Make(hot->extent_id(), hot->offset(), kGenerationMask);
  ASSERT_TRUE(alloc_->Release(hot_now, Types()).ok());
  auto base = arena_->ExtentBase(0);
  auto* h = reinterpret_cast<InstanceHeader*>(*base + hot->offset());
  EXPECT_EQ(h->flags.load() & kInstanceRetired, kInstanceRetired);
  // The retired block is never handed out again; its neighbors are.
  ASSERT_TRUE(alloc_->Release(*neighbor, Types()).ok());
  std::vector<Ref> refs;
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, 2000, refs).ok());
  for (Ref r : refs) EXPECT_NE(r.offset(), hot->offset());
  EXPECT_EQ(refs[0].offset(), neighbor->offset());
  // Other slabs of the extent still recycle: a freed large span is reused.
  Layout big = *Layout::Compute({FieldSpec::Bytes("blob", 40 * 1024)});
  auto b1 = alloc_->Allocate(3, big);
  ASSERT_TRUE(b1.ok());
  ASSERT_TRUE(alloc_->Release(*b1, Types()).ok());
  auto b2 = alloc_->Allocate(3, big);
  ASSERT_TRUE(b2.ok());
  EXPECT_EQ(b2->extent_id(), b1->extent_id());
  EXPECT_EQ(b2->offset(), b1->offset());
  EXPECT_GT(b2->generation_tag(), b1->generation_tag());
}

TEST_F(AllocatorTest, InstanceLargerThanAnExtentIsRejected) {
  Layout huge = *Layout::Compute({FieldSpec::Bytes("blob", 200 * 1024)});
  auto s = alloc_->Allocate(3, huge).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("raise extent_size"));
}

TEST_F(AllocatorTest, RetainAndReleaseCountReferences) {
  auto r = alloc_->Allocate(1, node_);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(alloc_->Retain(*r).ok());
  ASSERT_TRUE(alloc_->Retain(*r).ok());
  EXPECT_EQ(Refcount(*r), 3u);
  auto rel = alloc_->Release(*r, Types());
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->freed, 0u);
  EXPECT_EQ(Refcount(*r), 2u);
  ASSERT_TRUE(alloc_->Release(*r, Types()).ok());
  rel = alloc_->Release(*r, Types());
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->freed, 1u);
  EXPECT_EQ(alloc_->Stats().free_blocks, 1u);
  EXPECT_EQ(alloc_->Stats().free_block_bytes, 48u);  // node_: 40 -> class 48
  // Released once too often: the ref is stale now.
  EXPECT_EQ(alloc_->Release(*r, Types()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(alloc_->Retain(*r).code(), absl::StatusCode::kNotFound);
}

TEST_F(AllocatorTest, RetainOverflowIsResourceExhausted) {
  auto r = alloc_->Allocate(1, node_);
  ASSERT_TRUE(r.ok());
  arena_->Resolve(*r)->header().refcount.store(UINT32_MAX);
  EXPECT_EQ(alloc_->Retain(*r).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(AllocatorTest, FreeingReleasesRefFieldsTransitively) {
  auto a = alloc_->Allocate(1, node_);
  auto b = alloc_->Allocate(1, node_);
  auto c = alloc_->Allocate(1, node_);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  FieldHandle next = *FieldHandle::Bind(node_, "next", FieldKind::kRef);
  FieldHandle other = *FieldHandle::Bind(node_, "other", FieldKind::kRef);
  // a -> b -> c, and a -> c. A ref field owns one reference: b's only
  // reference moves into a.next; c gets two more, one per field.
  next.ref(*arena_->Resolve(*a)).store(*b);
  ASSERT_TRUE(alloc_->Retain(*c).ok());
  next.ref(*arena_->Resolve(*b)).store(*c);
  ASSERT_TRUE(alloc_->Retain(*c).ok());
  other.ref(*arena_->Resolve(*a)).store(*c);
  // The caller drops its own reference to c: the fields keep it alive.
  ASSERT_TRUE(alloc_->Release(*c, Types()).ok());
  EXPECT_EQ(Refcount(*c), 2u);
  EXPECT_EQ(Refcount(*b), 1u);
  auto rel = alloc_->Release(*a, Types());
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->freed, 3u);
  EXPECT_EQ(rel->dangling, 0u);
  EXPECT_EQ(alloc_->Stats().live_instances, 0u);
}

TEST_F(AllocatorTest, AMillionLongChainIsFreedWithoutRecursion) {
  Init(/*max_extents=*/64, /*extent_size=*/64ull << 20);
  FieldHandle next = *FieldHandle::Bind(node_, "next", FieldKind::kRef);
  const int kChain = 1000000;
  auto head = alloc_->Allocate(1, node_);
  ASSERT_TRUE(head.ok());
  Ref prev = *head;
  for (int i = 1; i < kChain; ++i) {
    auto r = alloc_->Allocate(1, node_);
    ASSERT_TRUE(r.ok()) << r.status();
    next.ref(*arena_->Resolve(prev)).store(*r);  // prev owns r now
    prev = *r;
  }
  EXPECT_EQ(alloc_->Stats().live_instances, uint64_t(kChain));
  auto rel = alloc_->Release(*head, Types());
  ASSERT_TRUE(rel.ok()) << rel.status();
  EXPECT_EQ(rel->freed, uint64_t(kChain));
  EXPECT_EQ(alloc_->Stats().live_instances, 0u);
}

TEST_F(AllocatorTest, DanglingRefFieldsAreCountedNotFollowed) {
  auto a = alloc_->Allocate(1, node_);
  ASSERT_TRUE(a.ok());
  FieldHandle next = *FieldHandle::Bind(node_, "next", FieldKind::kRef);
  FieldHandle other = *FieldHandle::Bind(node_, "other", FieldKind::kRef);
  next.ref(*arena_->Resolve(*a)).store(Ref::Make(0, 17 * 16, 3));  // forged
  other.ref(*arena_->Resolve(*a)).store(Ref::FromBits(~uint64_t{0}));
  auto rel = alloc_->Release(*a, Types());
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->freed, 1u);
  EXPECT_EQ(rel->dangling, 2u);
}

TEST_F(AllocatorTest, MutexFieldsAreInitializedOnAllocation) {
  Layout l = *Layout::Compute({FieldSpec::Mutex("mu")});
  auto r = alloc_->Allocate(4, l);
  ASSERT_TRUE(r.ok());
  FieldHandle h = *FieldHandle::Bind(l, "mu", FieldKind::kMutex);
  MutexField mu(h.address(*arena_->Resolve(*r)));
  auto g = mu.Lock();
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE(g->owner_died());
}

TEST_F(AllocatorTest, AdoptRebuildsStateFromTheArena) {
  std::vector<Ref> keep, drop;
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, 100, keep).ok());
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, 50, drop).ok());
  for (Ref r : drop) ASSERT_TRUE(alloc_->Release(r, Types()).ok());
  alloc_.reset();
  // A new owner (a restarted daemon) adopts the arena.
  auto reopened = Arena::Open(path_, Access::kReadWrite);
  ASSERT_TRUE(reopened.ok());
  AdoptReport report;
  auto adopted = Allocator::Adopt(reopened->get(), &report);
  ASSERT_TRUE(adopted.ok());
  EXPECT_EQ(report.live_instances, 100u);
  EXPECT_EQ(report.free_blocks, 50u);
  EXPECT_TRUE(report.problems.empty());
  EXPECT_TRUE(report.condemned.empty());
  for (Ref r : keep) EXPECT_TRUE((*reopened)->Resolve(r).ok());
  // New allocations reuse the freed blocks, never a live one.
  std::set<uint64_t> live;
  for (Ref r : keep) live.insert(r.offset());
  for (int i = 0; i < 200; ++i) {
    auto r = (*adopted)->Allocate(1, node_);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(live.count(r->offset()), 0u);
  }
}

TEST_F(AllocatorTest, AdoptReportsCondemnedInstances) {
  auto r = alloc_->Allocate(1, node_);
  ASSERT_TRUE(r.ok());
  // An owner died between refcount 0 and the free.
  arena_->Resolve(*r)->header().refcount.store(0);
  alloc_.reset();
  AdoptReport report;
  auto adopted = Allocator::Adopt(arena_.get(), &report);
  ASSERT_TRUE(adopted.ok());
  ASSERT_EQ(report.condemned.size(), 1u);
  EXPECT_EQ(report.condemned[0], *r);
  auto fin = (*adopted)->FinishCondemned(*r, Types());
  ASSERT_TRUE(fin.ok()) << fin.status();
  EXPECT_EQ(fin->freed, 1u);
}

TEST_F(AllocatorTest, DamagedFreeListIsDroppedNotFollowed) {
  std::vector<Ref> refs;
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, 10, refs).ok());
  for (Ref r : refs) ASSERT_TRUE(alloc_->Release(r, Types()).ok());
  // Scribble on the head free block's link: point it outside the arena.
  auto base = arena_->ExtentBase(refs.back().extent_id());
  ASSERT_TRUE(base.ok());
  auto* link = reinterpret_cast<uint64_t*>(*base + refs.back().offset() +
                                           kInstanceHeaderSize);
  *link = 0xDEADBEEFDEADBEEFull;
  for (int i = 0; i < 20; ++i) {
    auto r = alloc_->Allocate(1, node_);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(arena_->Resolve(*r).ok());
  }
}

TEST_F(AllocatorTest, ScribbledTypeIndexNamingABiggerLayoutIsNotFollowed) {
  // A 32-byte block whose type index a client rewrote to name a layout with
  // a ref field far beyond the block's end.
  Layout tiny = *Layout::Compute({FieldSpec::Scalar("x", FieldKind::kU8)});
  Layout huge = *Layout::Compute(
      {FieldSpec::Array("pad", FieldKind::kU8, 500000), FieldSpec::Ref("far")});
  auto r = alloc_->Allocate(7, tiny);
  ASSERT_TRUE(r.ok());
  arena_->Resolve(*r)->header().type_index.store(8);
  Allocator::TypeLookup types = [&](uint32_t i) -> const Layout* {
    return i == 7 ? &tiny : i == 8 ? &huge : nullptr;
  };
  auto rel = alloc_->Release(*r, types);
  ASSERT_TRUE(rel.ok()) << rel.status();
  EXPECT_EQ(rel->freed, 1u);
  EXPECT_EQ(rel->damaged, 1u);
}

TEST_F(AllocatorTest, FreeListLinkPastTheLastWholeBlockIsRefused) {
  // Class 48 does not divide 64 KiB: offset 1365 * 48 = 65520 is a multiple
  // of 48 but the block would cross into the next slab.
  std::vector<Ref> refs;
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, 2, refs).ok());
  ASSERT_TRUE(alloc_->Release(refs[1], Types()).ok());  // head of the list
  auto base = arena_->ExtentBase(0);
  uint32_t slab0 = ComputeExtentGeometry(arena_->extent_size()).data_offset;
  uint32_t bad_off = slab0 + 1365 * 48;
  auto* link = reinterpret_cast<uint64_t*>(*base + refs[1].offset() +
                                           kInstanceHeaderSize);
  *link = bad_off;  // extent 0, bad offset
  auto* bad = reinterpret_cast<InstanceHeader*>(*base + bad_off);
  bad->flags.store(kInstanceFreeListed);
  auto r1 = alloc_->Allocate(1, node_);
  auto r2 = alloc_->Allocate(1, node_);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_EQ(r1->offset(), refs[1].offset());
  EXPECT_NE(r2->offset(), bad_off);
  EXPECT_TRUE(arena_->Resolve(*r2).ok());
}

TEST_F(AllocatorTest, DamagedSlabDescriptorIsQuarantinedOnAdopt) {
  std::vector<Ref> refs;
  ASSERT_TRUE(alloc_->AllocateBatch(1, node_, 10, refs).ok());
  auto base = arena_->ExtentBase(0);
  ASSERT_TRUE(base.ok());
  auto* desc = reinterpret_cast<SlabDescriptor*>(*base + sizeof(ExtentHeader));
  desc[0].block_size.store(12345);
  desc[1].block_size.store(kSlabLargeTail);
  alloc_.reset();
  AdoptReport report;
  auto adopted = Allocator::Adopt(arena_.get(), &report);
  ASSERT_TRUE(adopted.ok());
  ASSERT_EQ(report.problems.size(), 2u);
  EXPECT_THAT(report.problems[0], HasSubstr("damaged descriptor"));
  EXPECT_THAT(report.problems[1], HasSubstr("tail without a head"));
  // Refs into the damaged slab are refused, not followed.
  EXPECT_EQ(arena_->Resolve(refs[0]).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto r = (*adopted)->Allocate(1, node_);
  ASSERT_TRUE(r.ok()) << r.status();
}

// Issue 14.8: a member that scribbles the slab descriptors used to make the
// owner itself hand out live blocks. The owner now decides from its own
// record of every slab; the scribble is only reported.
SlabDescriptor& DescOf(Arena& arena, Ref r) {
  uint8_t* base = *arena.ExtentBase(r.extent_id());
  ExtentGeometry g = ComputeExtentGeometry(arena.extent_size());
  uint32_t slab = (r.offset() - g.data_offset) / kSlabSize;
  return reinterpret_cast<SlabDescriptor*>(base + sizeof(ExtentHeader))[slab];
}

TEST_F(AllocatorTest, AScribbledNextUnusedNeverHandsOutALiveBlock) {
  std::set<uint64_t> live;
  for (int i = 0; i < 3; ++i) live.insert(alloc_->Allocate(1, node_)->bits());
  DescOf(*arena_, Ref::FromBits(*live.begin())).next_unused.store(0);
  for (int i = 0; i < 3; ++i) {
    auto r = alloc_->Allocate(1, node_);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(live.count(r->bits())) << r->ToString() << " handed out twice";
  }
  EXPECT_GT(alloc_->Stats().descriptor_mismatches, 0u);
}

TEST_F(AllocatorTest, AScribbledBlockSizeNeverRecarvesALiveSlab) {
  auto victim = alloc_->Allocate(1, node_);
  ASSERT_TRUE(victim.ok());
  auto inst = *arena_->Resolve(*victim);
  Scalar<uint64_t>(inst.payload()).store(77);
  DescOf(*arena_, *victim).block_size.store(kSlabUnassigned);
  ASSERT_FALSE(alloc_->DescriptorMismatches().empty());
  EXPECT_THAT(alloc_->DescriptorMismatches()[0], HasSubstr("daemon's record"));
  // A new size class needs a new slab: it must not be the victim's.
  auto other = alloc_->Allocate(2, small_);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(inst.type_index(), 1u);
  EXPECT_EQ(inst.header().refcount.load(), 1u);
  EXPECT_EQ(Scalar<uint64_t>(inst.payload()).load(), 77u);
}

TEST_F(AllocatorTest, AnEnlargedSpanNeverFreesItsNeighbours) {
  Init(4, 1 << 20);  // 15 slabs: both spans in one extent
  Layout big = *Layout::Compute({FieldSpec::Array("data", FieldKind::kU8, 70000)});
  auto first = alloc_->Allocate(3, big);
  auto second = alloc_->Allocate(3, big);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(first->extent_id(), second->extent_id());
  DescOf(*arena_, *first).span_slabs.store(3);  // really 2: swallows the next
  auto no_types = [](uint32_t) -> const Layout* { return nullptr; };
  ASSERT_TRUE(alloc_->Release(*first, no_types).ok());
  auto still = arena_->Resolve(*second);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->type_index(), 3u);
  // And its slabs are not handed out again.
  auto third = alloc_->Allocate(3, big);
  ASSERT_TRUE(third.ok());
  EXPECT_NE(third->bits(), second->bits());
  EXPECT_TRUE(arena_->Resolve(*second).ok());
}

}  // namespace
}  // namespace structd::shm

namespace structd::shm {
namespace {

// Arena::TryResolveTyped (View<T>'s fast path) never says yes where
// Resolve plus the type check would say no, for live, freed, reused,
// mistyped and random refs; and says yes for the common case.
TEST_F(AllocatorTest, TheTypedFastPathAgreesWithResolve) {
  const TypedBlock node = TypedBlock::For(1, node_.size());
  const TypedBlock small = TypedBlock::For(2, small_.size());
  std::vector<Ref> live, freed;
  for (int i = 0; i < 200; ++i) {
    auto r = alloc_->Allocate(i % 3 == 0 ? 2 : 1, i % 3 == 0 ? small_ : node_);
    ASSERT_TRUE(r.ok()) << r.status();
    live.push_back(*r);
  }
  for (int i = 0; i < 200; i += 4) {
    ASSERT_TRUE(alloc_->Release(live[i], Types()).ok());
    freed.push_back(live[i]);
  }
  // Reuse some of the freed blocks: their old refs must stay stale.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(alloc_->Allocate(1, node_).ok());

  auto agrees = [&](Ref r, const TypedBlock& want, uint32_t payload) {
    InstancePtr fast;
    bool yes = arena_->TryResolveTyped(r, want, &fast);
    absl::StatusOr<InstancePtr> slow = arena_->Resolve(r);
    bool slow_yes = slow.ok() && slow->type_index() == want.type_index && slow->Fits(payload);
    if (yes) {
      EXPECT_TRUE(slow_yes) << r.ToString();
      if (slow.ok()) {
        EXPECT_EQ(fast.block(), slow->block());
        EXPECT_EQ(fast.capacity(), slow->capacity());
      }
    }
    return yes;
  };
  int fast_hits = 0;
  for (Ref r : live) {
    bool is_small = r.bits() != 0 && arena_->Resolve(r).ok() &&
                    arena_->Resolve(r)->type_index() == 2;
    bool freed_now = std::find(freed.begin(), freed.end(), r) != freed.end();
    bool hit = agrees(r, is_small ? small : node, is_small ? small_.size() : node_.size());
    if (!freed_now) {
      EXPECT_TRUE(hit) << "a live instance of the right type takes the fast path";
      fast_hits += hit;
    } else {
      EXPECT_FALSE(hit) << "a freed ref never does";
    }
    // The other type never matches.
    agrees(r, is_small ? node : small, is_small ? node_.size() : small_.size());
  }
  EXPECT_GT(fast_hits, 100);
  // Random refs, and refs a little off the real ones.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200000; ++i) {
    Ref base = live[rng() % live.size()];
    Ref r = (i % 2 == 0) ? Ref::FromBits(rng())
                         : Ref::Make(base.extent_id() + (rng() % 3 == 0 ? 1 : 0),
                                     base.offset() + 16 * static_cast<uint32_t>(rng() % 9),
                                     base.generation_tag() + static_cast<uint32_t>(rng() % 2));
    agrees(r, node, node_.size());
    agrees(r, small, small_.size());
  }
  // A member forges a header inside another instance's payload, off the
  // block grid: only the block-start check stands between it and a view.
  for (Ref r : live) {
    if (std::find(freed.begin(), freed.end(), r) != freed.end()) continue;
    auto inst = arena_->Resolve(r);
    if (!inst.ok() || inst->type_index() != 1) continue;
    auto* fake = reinterpret_cast<InstanceHeader*>(inst->payload());
    fake->type_index.store(1);
    fake->generation.store(5);
    Ref forged = Ref::Make(r.extent_id(), r.offset() + kInstanceHeaderSize, 5);
    EXPECT_FALSE(agrees(forged, node, node_.size())) << forged.ToString();
    fake->type_index.store(0);
    fake->generation.store(0);
    break;
  }
  // A large type has no fast path.
  EXPECT_EQ(TypedBlock::For(3, 100000).block_size, 0u);
}

}  // namespace
}  // namespace structd::shm
