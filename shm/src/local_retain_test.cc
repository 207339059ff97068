#include "structd/shm/local_retain.h"

#include <sys/mman.h>

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "structd/shm/session_record.h"

namespace structd::shm {
namespace {

// A record and one instance block (header only: a retain reads nothing
// else) in one zero-filled mapping.
struct RecordAndInstance {
  RecordAndInstance() {
    mem = static_cast<uint8_t*>(
        mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    EXPECT_TRUE(SessionRecord::Format(mem, SessionRecord::Bytes(), 9).ok());
    record.emplace(*SessionRecord::Attach(mem, SessionRecord::Bytes()));
    block = mem + (SessionRecord::Bytes() + 63) / 64 * 64;
    header().type_index = 5;
    header().generation = 3;
    header().refcount = 1;
  }
  ~RecordAndInstance() { munmap(mem, kBytes); }
  InstanceHeader& header() { return *reinterpret_cast<InstanceHeader*>(block); }
  Ref ref(uint32_t gen = 3) const { return Ref::Make(0, 0x9000, gen); }
  InstancePtr instance(uint32_t gen = 3) { return InstancePtr(block, ref(gen), 64); }
  MoveContext Lane(uint32_t lane, uint32_t slot) {
    return MoveContext{record->lane(lane), SessionRecord::LaneId(9, lane), record->slot(slot),
                       slot, 0, record->gate()};
  }
  static constexpr size_t kBytes = 1 << 16;
  uint8_t* mem;
  uint8_t* block;
  std::optional<SessionRecord> record;
};

TEST(LocalRetainTest, RaisesTheCountPutsTheRefInTheSlotAndLeavesTheLaneIdle) {
  RecordAndInstance r;
  LocalRetainResult got = RetainIntoSlot(r.Lane(2, 40), r.instance());
  EXPECT_EQ(got.outcome, LocalRetain::kRetained);
  EXPECT_EQ(got.held, r.ref());
  EXPECT_EQ(r.header().refcount.load(), 2u);
  EXPECT_EQ(*r.record->slot(40), r.ref().bits());
  EXPECT_FALSE(r.record->LaneBusy(2));
}

TEST(LocalRetainTest, AnInstanceWhoseCountIsZeroIsNotRetained) {
  // Being freed, or claimed by its sole owner to be recycled in place.
  RecordAndInstance r;
  r.header().refcount = 0;
  EXPECT_EQ(RetainIntoSlot(r.Lane(0, 1), r.instance()).outcome, LocalRetain::kRefused);
  EXPECT_EQ(r.header().refcount.load(), 0u);
  EXPECT_EQ(*r.record->slot(1), 0u);
  EXPECT_FALSE(r.record->LaneBusy(0));
  r.header().refcount = UINT32_MAX;
  EXPECT_EQ(RetainIntoSlot(r.Lane(0, 1), r.instance()).outcome, LocalRetain::kRefused);
  EXPECT_EQ(r.header().refcount.load(), UINT32_MAX);
}

TEST(LocalRetainTest, AClosedGateChangesNothing) {
  RecordAndInstance r;
  r.record->CloseGate();
  EXPECT_EQ(RetainIntoSlot(r.Lane(0, 1), r.instance()).outcome, LocalRetain::kGated);
  EXPECT_EQ(r.header().refcount.load(), 1u);
  EXPECT_EQ(*r.record->slot(1), 0u);
  EXPECT_FALSE(r.record->LaneBusy(0));
}

TEST(LocalRetainTest, ABlockRecycledSinceTheCallerResolvedItHoldsTheNewInstanceInTheSlot) {
  // The caller resolved generation 3; the block now holds generation 4.
  // The count raised is the new instance's, so the slot must name that
  // one (for the caller to give back), never the stale ref.
  RecordAndInstance r;
  InstancePtr seen = r.instance(3);
  r.header().generation = 4;
  LocalRetainResult got = RetainIntoSlot(r.Lane(1, 7), seen);
  EXPECT_EQ(got.outcome, LocalRetain::kOtherInstance);
  EXPECT_EQ(got.held, r.ref(4));
  EXPECT_EQ(*r.record->slot(7), r.ref(4).bits());
  EXPECT_EQ(r.header().refcount.load(), 2u);
  EXPECT_FALSE(r.record->LaneBusy(1));
}

TEST(LocalRetainTest, AStopAfterEachStepLeavesTheLaneNamingTheSlotAndTheRef) {
  // What the daemon finds when the member is killed there: the lane busy,
  // of kind retain, naming the slot and the ref; the count raised, the
  // slot empty (step 2) or holding the ref (step 4).
  for (int step : {2, 4}) {
    RecordAndInstance r;
    internal::StopRetainAfterStepForTesting(step);
    (void)RetainIntoSlot(r.Lane(3, 11), r.instance());
    ASSERT_TRUE(r.record->LaneBusy(3)) << step;
    const MoveLane& lane = *r.record->lane(3);
    EXPECT_EQ(MoveKindOf(lane.op), MoveKind::kRetain);
    EXPECT_EQ(MoveSlotOf(lane.op), 11u);
    EXPECT_EQ(lane.port, r.ref().bits());
    EXPECT_EQ(r.header().refcount.load(), 2u);
    EXPECT_EQ(*r.record->slot(11), step == 2 ? 0u : r.ref().bits());
  }
}

TEST(LocalRetainTest, ManyThreadsRetainingAtOnceCountEveryRetain) {
  RecordAndInstance r;
  constexpr int kThreads = 8;
  constexpr int kEach = 100;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const uint32_t slot = t * kEach + i;
        EXPECT_EQ(RetainIntoSlot(r.Lane(t, slot), r.instance()).outcome, LocalRetain::kRetained);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(r.header().refcount.load(), 1u + kThreads * kEach);
  for (uint32_t s = 0; s < kThreads * kEach; ++s) EXPECT_EQ(*r.record->slot(s), r.ref().bits());
}

}  // namespace
}  // namespace structd::shm
