#include "structd/shm/local_store.h"

#include <sys/mman.h>

#include <optional>

#include "gtest/gtest.h"
#include "structd/shm/session_record.h"

namespace structd::shm {
namespace {

// A record and a holder block with one ref field (payload word 0), in one
// zero-filled mapping.
struct RecordAndHolder {
  RecordAndHolder() {
    mem = static_cast<uint8_t*>(
        mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    EXPECT_TRUE(SessionRecord::Format(mem, SessionRecord::Bytes(), 4).ok());
    record.emplace(*SessionRecord::Attach(mem, SessionRecord::Bytes()));
    block = mem + (SessionRecord::Bytes() + 63) / 64 * 64;
    header().type_index = 6;
    header().generation = 2;
    header().refcount = 1;
  }
  ~RecordAndHolder() { munmap(mem, kBytes); }
  InstanceHeader& header() { return *reinterpret_cast<InstanceHeader*>(block); }
  uint64_t* field() { return reinterpret_cast<uint64_t*>(block + kInstanceHeaderSize); }
  Ref holder_ref(uint32_t gen = 2) const { return Ref::Make(0, 0x9000, gen); }
  InstancePtr holder(uint32_t gen = 2) { return InstancePtr(block, holder_ref(gen), 64); }
  MoveContext Lane(uint32_t lane, uint32_t slot) {
    return MoveContext{record->lane(lane), SessionRecord::LaneId(4, lane), record->slot(slot),
                       slot, 0, record->gate()};
  }
  static constexpr size_t kBytes = 1 << 16;
  uint8_t* mem;
  uint8_t* block;
  std::optional<SessionRecord> record;
};

constexpr uint64_t kValue = 0x0004002400000005;  // some reference's bits
constexpr uint64_t kOld = 0x0004003400000007;

TEST(LocalStoreTest, TheFieldTakesTheSlotsReferenceAndTheSlotGetsTheOldOne) {
  RecordAndHolder r;
  *r.field() = kOld;
  *r.record->slot(3) = kValue;
  LocalStoreResult got = StoreFromSlot(r.Lane(1, 3), r.holder(), r.field(), r.record->slot(4));
  EXPECT_EQ(got.outcome, LocalStore::kStored);
  EXPECT_EQ(got.old.bits(), kOld);
  EXPECT_TRUE(got.guard.is_null());
  EXPECT_EQ(*r.field(), kValue);
  EXPECT_EQ(*r.record->slot(3), kOld);
  EXPECT_EQ(*r.record->slot(4), 0u) << "the guard slot is only for a last reference";
  EXPECT_EQ(r.header().refcount.load(), 1u) << "the guard was dropped";
  EXPECT_FALSE(r.record->LaneBusy(1));
}

TEST(LocalStoreTest, ClearingAFieldHandsItsReferenceBack) {
  RecordAndHolder r;
  *r.field() = kOld;
  LocalStoreResult got = StoreFromSlot(r.Lane(0, 9), r.holder(), r.field(), r.record->slot(10));
  EXPECT_EQ(got.outcome, LocalStore::kStored);
  EXPECT_EQ(*r.field(), 0u);
  EXPECT_EQ(*r.record->slot(9), kOld);
}

TEST(LocalStoreTest, AHolderBeingFreedOrAClosedGateChangesNothing) {
  RecordAndHolder r;
  *r.record->slot(3) = kValue;
  r.header().refcount = 0;
  EXPECT_EQ(StoreFromSlot(r.Lane(0, 3), r.holder(), r.field(), r.record->slot(4)).outcome,
            LocalStore::kRefused);
  r.header().refcount = 1;
  r.record->CloseGate();
  EXPECT_EQ(StoreFromSlot(r.Lane(0, 3), r.holder(), r.field(), r.record->slot(4)).outcome,
            LocalStore::kGated);
  EXPECT_EQ(*r.field(), 0u);
  EXPECT_EQ(*r.record->slot(3), kValue);
  EXPECT_EQ(r.header().refcount.load(), 1u);
  EXPECT_FALSE(r.record->LaneBusy(0));
}

TEST(LocalStoreTest, AHolderReplacedSinceItWasResolvedGetsNothingAndItsGuardIsHandedBack) {
  RecordAndHolder r;
  *r.record->slot(3) = kValue;
  InstancePtr seen = r.holder(2);
  r.header().generation = 3;
  LocalStoreResult got = StoreFromSlot(r.Lane(0, 3), seen, r.field(), r.record->slot(4));
  EXPECT_EQ(got.outcome, LocalStore::kHolderGone);
  EXPECT_EQ(got.guard, r.holder_ref(3));
  EXPECT_EQ(*r.record->slot(4), r.holder_ref(3).bits());
  EXPECT_EQ(r.header().refcount.load(), 2u) << "counted until the caller gives it back";
  EXPECT_EQ(*r.field(), 0u);
  EXPECT_EQ(*r.record->slot(3), kValue);
}

InstanceHeader* g_holder_header = nullptr;

TEST(LocalStoreTest, AGuardLeftLastGoesToTheGuardSlot) {
  // The holder's other owner lets go while the store runs: the guard is
  // then its last reference, which only the daemon may drop (that frees
  // the holder), so it is handed back in the guard slot.
  RecordAndHolder r;
  *r.record->slot(3) = kValue;
  g_holder_header = &r.header();
  internal::RunAfterStoreStep4ForTesting([] { g_holder_header->refcount.fetch_sub(1); });
  LocalStoreResult got = StoreFromSlot(r.Lane(2, 3), r.holder(), r.field(), r.record->slot(4));
  EXPECT_EQ(got.outcome, LocalStore::kStored);
  EXPECT_EQ(got.guard, r.holder_ref());
  EXPECT_EQ(*r.record->slot(4), r.holder_ref().bits());
  EXPECT_EQ(r.header().refcount.load(), 1u) << "the guard, named by the guard slot";
  EXPECT_EQ(*r.field(), kValue);
  EXPECT_FALSE(r.record->LaneBusy(2));
}

TEST(LocalStoreTest, AStopAfterEachStepLeavesALaneOfKindStoreNamingTheHolder) {
  for (int step : {2, 3, 4}) {
    RecordAndHolder r;
    *r.field() = kOld;
    *r.record->slot(3) = kValue;
    internal::StopStoreAfterStepForTesting(step);
    (void)StoreFromSlot(r.Lane(5, 3), r.holder(), r.field(), r.record->slot(4));
    ASSERT_TRUE(r.record->LaneBusy(5)) << step;
    EXPECT_EQ(MoveKindOf(r.record->lane(5)->op), MoveKind::kStore);
    EXPECT_EQ(MoveSlotOf(r.record->lane(5)->op), 3u);
    EXPECT_EQ(r.record->lane(5)->port, r.holder_ref().bits());
    EXPECT_EQ(r.header().refcount.load(), 2u) << "the guard is in";
    EXPECT_EQ(*r.field(), step >= 3 ? kValue : kOld);
    if (step >= 3) EXPECT_EQ(r.record->lane(5)->spare, kOld) << "the old value, named by the lane";
    EXPECT_EQ(*r.record->slot(3), step >= 4 ? kOld : kValue);
  }
}

}  // namespace
}  // namespace structd::shm
