// Session records in the domain core (issue 18; core/channel_records.cc):
// a client's own moves through a port, in shared memory, as the daemon
// sees them: counted by the census, released from marked slots, finished
// or undone at the session's end, and left alone by a census while a
// stopped client is in the middle of one.
#include <signal.h>
#include <sys/wait.h>

#include <random>

#include <gmock/gmock.h>

#include "core/core.h"
#include "core/core_fixture.h"
#include "structd/shm/local_retain.h"
#include "structd/shm/local_store.h"
#include "structd/shm/port_ring.h"
#include "structd/shm/session_record.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;

// What a client maps: its record and a port, with a lane of the record.
struct ClientSide {
  Channel::RecordInfo info;
  std::optional<shm::SessionRecord> record;
  std::optional<shm::PortRing> ring;
  shm::Ref port;
  shm::MoveContext Move(uint32_t lane, uint32_t slot) {
    return shm::MoveContext{record->lane(lane), shm::SessionRecord::LaneId(info.tag, lane),
                            record->slot(slot), slot, port.bits(), record->gate()};
  }
};

class RecordsTest : public CoreFixture {
 protected:
  void SetUp() override {
    CoreFixture::SetUp();
    a_ = Attach("a");
    b_ = Attach("b");
    auto created = core_->CreateChannel(a_, "ch", 0, 0);
    ASSERT_TRUE(created.ok()) << created.status();
    member_ = created->member_capability;
    ASSERT_TRUE(core_->JoinChannel(b_, "ch", member_).ok());
    ch_ = *core_->Joined(a_, "ch");
    node_ = (*ch_->RegisterType("N", Node())).type->token;
    ASSERT_TRUE(ch_->CreatePort("p", 8).ok());
  }
  ClientSide Client(const std::string& session) {
    ClientSide c;
    auto info = ch_->OpenRecord(session);
    EXPECT_TRUE(info.ok()) << info.status();
    c.info = *info;
    c.port = ch_->GetRoot("p")->ref;
    ch_->WithArena([&](shm::Arena& arena, const TypeRegistry& registry) {
      shm::InstancePtr rec = *arena.Resolve(c.info.ref);
      c.record.emplace(*shm::SessionRecord::Attach(
          rec.payload(), registry.FindByIndex(rec.type_index())->layout.size()));
      shm::InstancePtr port = *arena.Resolve(c.port);
      c.ring.emplace(*shm::PortRing::Attach(
          port.payload(), registry.FindByIndex(port.type_index())->layout.size()));
      return 0;
    });
    return c;
  }
  shm::Ref AllocateOne(const std::string& session) { return (*ch_->Allocate(session, node_, 1))[0]; }
  // Sends `r` (owned by a_'s ledger) into the port through the daemon.
  void SendThroughDaemon(shm::Ref r) { ASSERT_EQ(*ch_->SendToPort(a_, "p", {r}), 1u); }
  bool IsLive(shm::Ref r) {
    return ch_->WithArena([&](shm::Arena& arena, const TypeRegistry&) { return arena.Resolve(r).ok(); });
  }
  uint32_t Refcount(shm::Ref r) {
    return ch_->WithArena([&](shm::Arena& arena, const TypeRegistry&) {
      return arena.Resolve(r)->header().refcount.load();
    });
  }
  void ExpectCensusClean() {
    CheckReport check = ch_->Check();
    for (const auto& p : check.problems) ADD_FAILURE() << p.what;
  }
  uint64_t Live() { return ch_->Stats().alloc.live_instances; }
  // A process that exists until KillChild: what a client's session names.
  SessionProcess Child() {
    child_ = fork();
    if (child_ == 0) {
      pause();
      _exit(0);
    }
    return SessionProcess{nullptr, child_};
  }
  void KillChild() {
    kill(child_, SIGKILL);
    waitpid(child_, nullptr, 0);
  }
  // A process that has exited (its session's moves can be repaired).
  SessionProcess Dead() {
    SessionProcess p = Child();
    KillChild();
    return p;
  }

  std::string a_, b_;
  std::string member_;
  std::shared_ptr<Channel> ch_;
  shm::TypeToken node_;
  pid_t child_ = -1;
};

TEST_F(RecordsTest, ASessionHasOneRecordWithATagOfItsOwnThatTheCensusCounts) {
  auto first = ch_->OpenRecord(b_);
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = ch_->OpenRecord(b_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ref, first->ref);
  EXPECT_EQ(again->tag, first->tag);
  auto other = ch_->OpenRecord(a_);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->tag, first->tag);
  EXPECT_NE(other->tag, 0u);
  ExpectCensusClean();
  // A restart keeps both, and gives the next record a tag of its own.
  ch_.reset();
  Reopen();
  ch_ = *core_->Find("ch");
  EXPECT_EQ(ch_->OpenRecord(b_)->ref, first->ref);
  ASSERT_TRUE(IsLive(first->ref)) << "the census freed a record its session holds";
  ExpectCensusClean();
}

TEST_F(RecordsTest, AMessageReceivedIntoASlotIsCountedThereAndReleasedFromItOnceMarked) {
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  ASSERT_TRUE(b.ring->TryReceive(b.Move(0, 5)).ok());
  EXPECT_EQ(*b.record->slot(5), r.bits());
  ExpectCensusClean();  // the slot's reference is counted: refcount 1
  EXPECT_EQ(Refcount(r), 1u);
  // Unmarked, the slot is the client's: Release does not take it.
  auto refused = ch_->Release(b_, {r});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(*b.record->slot(5), r.bits());
  // Marked given up: Release takes it from the slot, and frees it.
  *b.record->mark(5) = 1;
  auto freed = ch_->Release(b_, {r});
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(*freed, 1u);
  EXPECT_EQ(*b.record->slot(5), 0u);
  EXPECT_FALSE(IsLive(r));
  ExpectCensusClean();
}

TEST_F(RecordsTest, AClientSendsFromItsSlotAndAnotherReceivesWithoutTheDaemon) {
  ClientSide a = Client(a_);
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  ASSERT_TRUE(b.ring->TryReceive(b.Move(3, 0)).ok());
  // b sends it back from its slot; a receives it into one of its own.
  ASSERT_TRUE(b.ring->TrySend(b.Move(3, 0)).ok());
  EXPECT_EQ(*b.record->slot(0), 0u);
  ExpectCensusClean();  // in the port: counted there
  ASSERT_TRUE(a.ring->TryReceive(a.Move(1, 9)).ok());
  EXPECT_EQ(*a.record->slot(9), r.bits());
  ExpectCensusClean();
  EXPECT_EQ(Refcount(r), 1u);
}

TEST_F(RecordsTest, ASessionsEndReleasesWhatItsSlotsHoldAndItsRecord) {
  const uint64_t before = Live();
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  ASSERT_TRUE(b.ring->TryReceive(b.Move(0, 7)).ok());
  EXPECT_EQ(Live(), before + 2);  // the record and the message
  ch_->Leave(b_, SessionProcess{});
  EXPECT_FALSE(IsLive(r));
  EXPECT_FALSE(IsLive(b.info.ref));
  EXPECT_EQ(Live(), before);
  ExpectCensusClean();
}

// A receiver killed inside its receive: rolled back before the slot was
// filled (the message stays in the port), completed after (released with
// the session).
class RecordsReceiveCrashTest : public RecordsTest, public ::testing::WithParamInterface<int> {};

TEST_P(RecordsReceiveCrashTest, TheSessionsEndFinishesOrUndoesTheLanesMove) {
  const int step = GetParam();
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  shm::internal::StopPortMoveAfterStepForTesting(step);
  EXPECT_EQ(b.ring->TryReceive(b.Move(2, 4)).code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(b.record->LaneBusy(2));
  ch_->Leave(b_, Dead());
  const bool received = step >= 3;  // 3: after filling the slot
  EXPECT_EQ(IsLive(r), !received) << "step " << step;
  if (!received) {
    auto got = ch_->ReceiveFromPort(a_, "p", 10);
    ASSERT_TRUE(got.ok());
    EXPECT_THAT(*got, ::testing::ElementsAre(r)) << "the message went back into the port";
  } else {
    EXPECT_TRUE(ch_->ReceiveFromPort(a_, "p", 10)->empty());
  }
  ExpectCensusClean();
}

INSTANTIATE_TEST_SUITE_P(Steps, RecordsReceiveCrashTest, ::testing::Values(1, 2, 3, 4));

class RecordsSendCrashTest : public RecordsTest, public ::testing::WithParamInterface<int> {};

TEST_P(RecordsSendCrashTest, TheSessionsEndCompletesASendThatClaimedItsCell) {
  const int step = GetParam();
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  ASSERT_TRUE(b.ring->TryReceive(b.Move(0, 1)).ok());
  shm::internal::StopPortMoveAfterStepForTesting(step);
  EXPECT_EQ(b.ring->TrySend(b.Move(0, 1)).code(), absl::StatusCode::kAborted);
  ch_->Leave(b_, Dead());
  const bool sent = step >= 2;  // 2: after claiming the cell
  auto got = ch_->ReceiveFromPort(a_, "p", 10);
  ASSERT_TRUE(got.ok()) << got.status();
  if (sent) {
    EXPECT_THAT(*got, ::testing::ElementsAre(r)) << "step " << step;
  } else {
    EXPECT_TRUE(got->empty());
    EXPECT_FALSE(IsLive(r)) << "released with the slot";
  }
  ExpectCensusClean();
}

INSTANTIATE_TEST_SUITE_P(Steps, RecordsSendCrashTest, ::testing::Values(1, 2, 3, 4, 5, 6));

TEST_F(RecordsTest, ARecordWithAMoveInFlightOutlivesItsSessionUntilItsProcessExits) {
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  shm::internal::StopPortMoveAfterStepForTesting(2);  // taken, slot not filled
  EXPECT_EQ(b.ring->TryReceive(b.Move(0, 0)).code(), absl::StatusCode::kAborted);
  const SessionProcess process = Child();
  ch_->Leave(b_, process);
  EXPECT_TRUE(IsLive(b.info.ref)) << "the live process may still be moving";
  EXPECT_EQ(ch_->ReapClaims(), 0u);
  EXPECT_TRUE(IsLive(b.info.ref));
  KillChild();
  ch_->ReapClaims();
  EXPECT_FALSE(IsLive(b.info.ref));
  EXPECT_THAT(*ch_->ReceiveFromPort(a_, "p", 10), ::testing::ElementsAre(r));
  ExpectCensusClean();
}

TEST_F(RecordsTest, ACensusLeavesAloneWhatAStoppedClientIsMoving) {
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  // Stopped after filling its slot, before emptying the cell: the one
  // reference is in both words, which the census would count twice.
  shm::internal::StopPortMoveAfterStepForTesting(3);
  EXPECT_EQ(b.ring->TryReceive(b.Move(0, 1)).code(), absl::StatusCode::kAborted);
  ExpectCensusClean();
  // A restart's census (the client still stopped) leaves its refcount.
  ch_.reset();
  Reopen();
  ch_ = *core_->Find("ch");
  ASSERT_TRUE(IsLive(r));
  EXPECT_EQ(Refcount(r), 1u) << "the census counted the message in the slot and the cell";
  // The client dies there: the receive is complete, the message its.
  b = Client(b_);
  ch_->Leave(b_, Dead());
  EXPECT_FALSE(IsLive(r));
  EXPECT_TRUE(ch_->ReceiveFromPort(a_, "p", 10)->empty());
  ExpectCensusClean();
}

// A client killed inside a retain of an instance another session owns
// (shm/local_retain.h): after the count was raised (step 2) or after the
// slot got the reference (step 4). Either way, once its session ends the
// instance is counted exactly by the other owner, and freed with it.
class RecordsRetainCrashTest : public RecordsTest, public ::testing::WithParamInterface<int> {};

TEST_P(RecordsRetainCrashTest, TheSessionsEndLeavesTheCountExact) {
  const int step = GetParam();
  ClientSide b = Client(b_);
  const shm::Ref r = AllocateOne(a_);
  shm::InstancePtr instance =
      ch_->WithArena([&](shm::Arena& arena, const TypeRegistry&) { return *arena.Resolve(r); });
  shm::internal::StopRetainAfterStepForTesting(step);
  (void)shm::RetainIntoSlot(b.Move(5, 9), instance);
  ASSERT_TRUE(b.record->LaneBusy(5));
  ASSERT_EQ(Refcount(r), 2u);
  // While the process lives (stopped there), a census leaves it alone.
  ExpectCensusClean();
  ch_->Leave(b_, Dead());
  ASSERT_TRUE(IsLive(r));
  EXPECT_EQ(Refcount(r), 1u) << "step " << step << ": a's reference alone";
  ExpectCensusClean();
  ASSERT_TRUE(ch_->Release(a_, {r}).ok());
  EXPECT_FALSE(IsLive(r)) << "freed with its last owner";
  ExpectCensusClean();
}

INSTANTIATE_TEST_SUITE_P(Steps, RecordsRetainCrashTest, ::testing::Values(2, 4));

TEST_F(RecordsTest, ARetainInFlightInARecordKeptForItsLiveProcessIsRecountedWhenItExits) {
  // Two sessions end with moves in flight; the second's recount must
  // still count what the first's record (kept: its process lives) holds.
  ClientSide b = Client(b_);
  const std::string c_session = Attach("c");
  ASSERT_TRUE(core_->JoinChannel(c_session, "ch", member_).ok());
  ClientSide c = Client(c_session);
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  ASSERT_TRUE(b.ring->TryReceive(b.Move(0, 1)).ok());  // r: in b's slot 1 alone
  const shm::Ref r2 = AllocateOne(a_);
  SendThroughDaemon(r2);
  shm::internal::StopPortMoveAfterStepForTesting(2);  // r2 taken, b's slot 2 not filled
  EXPECT_EQ(b.ring->TryReceive(b.Move(1, 2)).code(), absl::StatusCode::kAborted);
  const SessionProcess c_process = Dead();  // before b's: Child() keeps one pid
  const SessionProcess b_process = Child();
  ch_->Leave(b_, b_process);
  const shm::Ref other = AllocateOne(a_);
  shm::InstancePtr instance =
      ch_->WithArena([&](shm::Arena& arena, const TypeRegistry&) { return *arena.Resolve(other); });
  shm::internal::StopRetainAfterStepForTesting(2);
  (void)shm::RetainIntoSlot(c.Move(0, 3), instance);
  ch_->Leave(c_session, c_process);
  EXPECT_EQ(Refcount(other), 1u);
  ASSERT_TRUE(IsLive(r)) << "b's kept record still names it: the recount must count it";
  EXPECT_EQ(Refcount(r), 1u);
  KillChild();
  ch_->ReapClaims();
  EXPECT_FALSE(IsLive(r)) << "received by b, released with b's record";
  EXPECT_THAT(*ch_->ReceiveFromPort(a_, "p", 10), ::testing::ElementsAre(r2));
  ExpectCensusClean();
}

// A client killed inside a store from its slot into a field of an
// instance another session owns (shm/local_store.h): after the guard on
// the holder (step 2), after the field's exchange (3: the stored ref is
// named twice, the old one nowhere) or after the slot got the old
// reference (4). Once its session ends, every count is what names it.
class RecordsStoreCrashTest : public RecordsTest, public ::testing::WithParamInterface<int> {};

TEST_P(RecordsStoreCrashTest, TheSessionsEndLeavesEveryCountExact) {
  const int step = GetParam();
  ClientSide b = Client(b_);
  const shm::Ref holder = AllocateOne(a_);
  const shm::Ref old = AllocateOne(a_);
  ASSERT_TRUE(ch_->StoreRefs(a_, {{holder, 1, old, /*move=*/true}}).ok());
  const shm::Ref r = AllocateOne(a_);
  SendThroughDaemon(r);
  ASSERT_TRUE(b.ring->TryReceive(b.Move(0, 3)).ok());  // r: in b's slot 3
  shm::InstancePtr h =
      ch_->WithArena([&](shm::Arena& arena, const TypeRegistry&) { return *arena.Resolve(holder); });
  uint64_t* field = reinterpret_cast<uint64_t*>(h.payload() + 8);
  shm::internal::StopStoreAfterStepForTesting(step);
  (void)shm::StoreFromSlot(b.Move(5, 3), h, field, b.record->slot(4));
  ASSERT_TRUE(b.record->LaneBusy(5));
  ASSERT_EQ(Refcount(holder), 2u) << "the guard is in";
  ExpectCensusClean();  // a stopped store is left alone
  ch_->Leave(b_, Dead());
  const bool stored = step >= 3;
  EXPECT_EQ(*field, (stored ? r : old).bits()) << "step " << step;
  EXPECT_EQ(Refcount(holder), 1u) << "step " << step << ": a's reference alone";
  EXPECT_TRUE(IsLive(stored ? r : old));
  EXPECT_EQ(Refcount(stored ? r : old), 1u) << "step " << step << ": the field's";
  EXPECT_FALSE(IsLive(stored ? old : r)) << "step " << step << ": released with b";
  ExpectCensusClean();
  ASSERT_TRUE(ch_->Release(a_, {holder}).ok());
  EXPECT_FALSE(IsLive(holder));
  EXPECT_FALSE(IsLive(r));
  EXPECT_FALSE(IsLive(old));
  ExpectCensusClean();
}

INSTANTIATE_TEST_SUITE_P(Steps, RecordsStoreCrashTest, ::testing::Values(2, 3, 4));

TEST_F(RecordsTest, ScribbledRecordsSpoilTheirChannelOnlyAndNeverStopTheDaemon) {
  auto other = core_->CreateChannel(a_, "other", 0, 0);
  ASSERT_TRUE(other.ok());
  std::shared_ptr<Channel> other_ch = *core_->Joined(a_, "other");
  const shm::TypeToken t = (*other_ch->RegisterType("N", Node())).type->token;
  const shm::Ref kept = (*other_ch->Allocate(a_, t, 1))[0];
  ASSERT_TRUE(other_ch->SetRoot("kept", kept).ok());
  std::mt19937_64 rng(18);
  for (int round = 0; round < 10; ++round) {  // sessions per process: 16
    const std::string s = Attach("scribbler");
    ASSERT_TRUE(core_->JoinChannel(s, "ch", member_).ok());
    ClientSide c = Client(s);
    const shm::Ref r = AllocateOne(a_);
    SendThroughDaemon(r);
    (void)c.ring->TryReceive(c.Move(0, 0));
    // Random words into lanes, slots, marks and the header.
    auto* words = reinterpret_cast<uint64_t*>(c.record->lane(0));
    for (int i = 0; i < 64; ++i) {
      const uint64_t v = rng();
      const uint64_t pick = rng() % 5;
      if (pick == 4) {
        // A retain or store lane (kinds 3 and 4) naming anything: the
        // session's end recounts the channel.
        shm::MoveLane* lane = c.record->lane(static_cast<uint32_t>(rng()));
        lane->op = (uint64_t{3 + rng() % 2} << 56) | (v & 0xffffffff);
        lane->port = rng() % 2 == 0 ? r.bits() : rng();
        lane->spare = rng() % 2 == 0 ? c.info.ref.bits() : rng();
      }
      if (pick == 0) words[rng() % (3 * shm::kRecordLanes)] = v;
      if (pick == 1) *c.record->slot(static_cast<uint32_t>(rng())) = v;
      if (pick == 2) *c.record->mark(static_cast<uint32_t>(rng())) = static_cast<uint32_t>(v);
      if (pick == 3) *c.record->slot(static_cast<uint32_t>(rng())) = r.bits() + (v & 0xff);
    }
    (void)ch_->Check();
    (void)ch_->Release(s, {r});
    ch_->Leave(s, Dead());
  }
  // The daemon survives a restart's census of it, and the other channel is
  // untouched.
  ch_.reset();
  other_ch.reset();
  Reopen();
  ch_ = *core_->Find("ch");
  (void)ch_->Check();
  other_ch = *core_->Find("other");
  CheckReport check = other_ch->Check();
  EXPECT_TRUE(check.problems.empty());
  EXPECT_EQ(other_ch->GetRoot("kept")->ref, kept);
}

}  // namespace
}  // namespace structd::server
