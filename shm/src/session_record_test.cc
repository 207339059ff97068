#include "structd/shm/session_record.h"

#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace structd::shm {
namespace {

using namespace std::chrono_literals;

// A record and a ring of 8 cells in one zero-filled mapping.
struct RecordAndPort {
  RecordAndPort() {
    mem = static_cast<uint8_t*>(
        mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    EXPECT_TRUE(SessionRecord::Format(mem, SessionRecord::Bytes(), 7).ok());
    record.emplace(*SessionRecord::Attach(mem, SessionRecord::Bytes()));
    ring_mem = mem + (SessionRecord::Bytes() + 63) / 64 * 64;
    EXPECT_TRUE(PortRing::Format(ring_mem, PortRing::BytesFor(8), 8).ok());
    ring.emplace(*PortRing::Attach(ring_mem, PortRing::BytesFor(8)));
  }
  ~RecordAndPort() { munmap(mem, kBytes); }
  MoveContext Mover(uint32_t lane, uint32_t slot) {
    return MoveContext{record->lane(lane), SessionRecord::LaneId(7, lane), record->slot(slot), slot,
                       0x5157, record->gate()};
  }
  static constexpr size_t kBytes = 1 << 20;
  uint8_t* mem;
  uint8_t* ring_mem;
  std::optional<SessionRecord> record;
  std::optional<PortRing> ring;
};

TEST(SessionRecordTest, LayoutMatchesTheRecord) {
  LayoutLimits builtin = LayoutLimits::None();
  absl::StatusOr<Layout> layout = Layout::Compute(SessionRecord::LayoutFields(), builtin);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->size(), SessionRecord::Bytes());
  auto offset = [&](const char* name) { return layout->fields()[*layout->FindField(name)].offset; };
  EXPECT_EQ(offset("gate"), offsetof(SessionRecordHeader, gate));
  EXPECT_EQ(offset("tag"), offsetof(SessionRecordHeader, tag));
  EXPECT_EQ(offset("lanes"), sizeof(SessionRecordHeader));
  EXPECT_EQ(offset("slots"), sizeof(SessionRecordHeader) + kRecordLanes * sizeof(MoveLane));
  EXPECT_EQ(offset("marks"), offset("slots") + 8 * kRecordSlots);
  EXPECT_TRUE(layout->ref_offsets().empty())
      << "slots are counted by the daemon's own code (they name blocks), not as ref fields";
}

TEST(SessionRecordTest, AttachRefusesARecordWhoseCountsAMemberOverwrote) {
  RecordAndPort r;
  EXPECT_EQ(SessionRecord::Attach(r.mem, SessionRecord::Bytes() - 1).status().code(),
            absl::StatusCode::kDataLoss);
  reinterpret_cast<SessionRecordHeader*>(r.mem)->slot_count = 1u << 30;
  absl::StatusOr<SessionRecord> bad = SessionRecord::Attach(r.mem, SessionRecord::Bytes());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
}

TEST(SessionRecordTest, AMoveThatFindsTheGateClosedBacksOutAndWaitsForItToOpen) {
  RecordAndPort r;
  r.record->CloseGate();
  *r.record->slot(3) = 0xabc0;
  // A bounded wait ends UNAVAILABLE, with nothing moved and the lane idle.
  absl::Status s = r.ring->Send(r.Mover(1, 3), PortWait{50ms, 0});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(*r.record->slot(3), 0xabc0u);
  EXPECT_FALSE(r.record->LaneBusy(1));
  EXPECT_EQ(r.ring->stats().tail, 0u);
  // A move waiting at the gate goes on once it opens.
  std::atomic<bool> sent{false};
  std::thread sender([&] {
    EXPECT_TRUE(r.ring->Send(r.Mover(1, 3), PortWait{10s, 0}).ok());
    sent = true;
  });
  std::this_thread::sleep_for(30ms);
  EXPECT_FALSE(sent.load()) << "the move went through a closed gate";
  r.record->OpenGate();
  sender.join();
  EXPECT_TRUE(sent.load());
  EXPECT_EQ(*r.record->slot(3), 0u);
  ASSERT_TRUE(r.ring->TryReceive(r.Mover(2, 4)).ok());
  EXPECT_EQ(*r.record->slot(4), 0xabc0u);
}

TEST(SessionRecordTest, EitherTheCensusSeesALaneBusyOrTheMoverSeesTheGate) {
  // Dekker: a mover writes its lane then reads the gate; the census closes
  // the gate then reads the lanes. Never both miss: a census that found
  // every lane idle is never followed by a move it did not see start.
  RecordAndPort r;
  for (int round = 0; round < 2000; ++round) {
    *r.record->slot(0) = 0x1000 + round;
    std::atomic<bool> go{false};
    std::atomic<bool> moved_under_census{false};
    std::thread mover([&] {
      while (!go.load(std::memory_order_acquire)) {
      }
      absl::Status s = r.ring->TrySend(r.Mover(0, 0));
      (void)s;
    });
    go.store(true, std::memory_order_release);
    r.record->CloseGate();
    const bool busy = r.record->LaneBusy(0);
    if (!busy) {
      // Everything counted now must stay still until the gate opens.
      const uint64_t tail = r.ring->stats().tail;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      if (r.ring->stats().tail != tail && *r.record->slot(0) == 0) moved_under_census = true;
    }
    r.record->OpenGate();
    mover.join();
    EXPECT_FALSE(moved_under_census.load()) << "round " << round;
    // Drain what was sent so the ring never fills.
    *r.record->slot(1) = 0;
    while (r.ring->TryReceive(r.Mover(1, 1)).ok()) *r.record->slot(1) = 0;
  }
}

}  // namespace
}  // namespace structd::shm
