// Ports in the domain core (issue 18; core/channel_ports.cc): creation,
// the daemon's moves between a session's ledger and a port, the census
// counting messages, a restart in the middle of the daemon's own move,
// and hostile bytes in a port's memory.
#include <random>

#include <gmock/gmock.h>

#include "core/core.h"
#include "core/core_fixture.h"
#include "structd/shm/port_ring.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;

class PortsTest : public CoreFixture {
 protected:
  void SetUp() override {
    CoreFixture::SetUp();
    a_ = Attach("a");
    b_ = Attach("b");
    auto created = core_->CreateChannel(a_, "ch", 0, 0);
    ASSERT_TRUE(created.ok()) << created.status();
    ASSERT_TRUE(core_->JoinChannel(b_, "ch", created->member_capability).ok());
    ch_ = *core_->Joined(a_, "ch");
    node_ = (*ch_->RegisterType("N", Node())).type->token;
  }
  std::vector<shm::Ref> Allocate(const std::string& session, uint32_t n) {
    auto refs = ch_->Allocate(session, node_, n);
    EXPECT_TRUE(refs.ok()) << refs.status();
    return refs.ok() ? *refs : std::vector<shm::Ref>{};
  }
  void ExpectCensusClean() {
    CheckReport check = ch_->Check();
    for (const auto& p : check.problems) ADD_FAILURE() << p.what;
  }
  uint64_t Live() { return ch_->Stats().alloc.live_instances; }
  // The daemon killed and started again (its census included).
  void Restart() {
    ch_.reset();
    Reopen();
    ch_ = *core_->Find("ch");
  }
  // The port's ring, for a test that plays a member or a dying daemon.
  template <typename Fn>
  void WithRing(const std::string& port, Fn fn) {
    shm::Ref ref = ch_->GetRoot(port)->ref;
    ch_->WithArena([&](shm::Arena& arena, const TypeRegistry& registry) {
      shm::InstancePtr inst = *arena.Resolve(ref);
      const RegisteredType* t = registry.FindByIndex(inst.type_index());
      fn(*shm::PortRing::Attach(inst.payload(), t->layout.size()), inst);
      return 0;
    });
  }

  std::string a_, b_;
  std::shared_ptr<Channel> ch_;
  shm::TypeToken node_;
};

TEST_F(PortsTest, APortCarriesReferencesFromOneSessionToAnotherAndOwnsThemMeanwhile) {
  auto port = ch_->CreatePort("jobs", 4);
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(port->capacity, 4u);
  std::vector<shm::Ref> refs = Allocate(a_, 3);
  auto sent = ch_->SendToPort(a_, "jobs", refs);
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(*sent, 3u);
  EXPECT_EQ(ch_->RefsHeld(a_), 0u) << "sent references leave the sender's ledger";
  ExpectCensusClean();  // the port's three references are counted
  std::vector<Channel::PortInfo> ports = ch_->ListPorts();
  ASSERT_EQ(ports.size(), 1u);
  EXPECT_EQ(ports[0].name, "jobs");
  EXPECT_EQ(ports[0].sent, 3u);
  EXPECT_EQ(ports[0].received, 0u);
  auto got = ch_->ReceiveFromPort(b_, "jobs", 2);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (std::vector<shm::Ref>{refs[0], refs[1]})) << "oldest first";
  got = ch_->ReceiveFromPort(b_, "jobs", 10);
  EXPECT_EQ(*got, (std::vector<shm::Ref>{refs[2]}));
  EXPECT_TRUE(ch_->ReceiveFromPort(b_, "jobs", 10)->empty());
  EXPECT_EQ(ch_->RefsHeld(b_), 3u);
  ExpectCensusClean();
  const uint64_t live = Live();
  ASSERT_TRUE(ch_->Release(b_, refs).ok()) << "the receiver owns them";
  EXPECT_EQ(Live(), live - 3);
}

TEST_F(PortsTest, AFullPortTakesWhatFitsAndThenRefuses) {
  ASSERT_TRUE(ch_->CreatePort("small", 2).ok());
  std::vector<shm::Ref> refs = Allocate(a_, 3);
  EXPECT_EQ(*ch_->SendToPort(a_, "small", refs), 2u);
  EXPECT_EQ(ch_->RefsHeld(a_), 1u) << "the one that did not fit is still the sender's";
  auto full = ch_->SendToPort(a_, "small", {refs[2]});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("full"));
  ExpectCensusClean();
}

TEST_F(PortsTest, BadCallsSayWhatIsWrongAndChangeNothing) {
  EXPECT_EQ(ch_->CreatePort("p", 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ch_->CreatePort("p", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ch_->CreatePort("bad name", 4).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(ch_->CreatePort("p", 4).ok());
  EXPECT_EQ(ch_->CreatePort("p", 4).status().code(), absl::StatusCode::kAlreadyExists);
  std::vector<shm::Ref> refs = Allocate(a_, 1);
  EXPECT_EQ(ch_->SendToPort(a_, "nope", refs).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(ch_->SetRoot("plain", refs[0]).ok());
  auto not_port = ch_->SendToPort(a_, "plain", refs);
  EXPECT_EQ(not_port.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(not_port.status().message(), HasSubstr("not a port"));
  auto not_owned = ch_->SendToPort(b_, "p", refs);
  EXPECT_EQ(not_owned.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(not_owned.status().message(), HasSubstr("owns 0"));
  auto twice = ch_->SendToPort(a_, "p", {refs[0], refs[0]});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ch_->ListPorts()[0].sent, 0u) << "a refused call sends nothing";
  auto by_hand = ch_->SetFieldAsAdmin(ch_->GetRoot("p")->ref, "tail", "5");
  EXPECT_EQ(by_hand.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(by_hand.status().message(), HasSubstr("built-in"));
  auto reserved = ch_->RegisterType("structd.mine", Node());
  EXPECT_EQ(reserved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(reserved.status().message(), HasSubstr("built-in"));
  ExpectCensusClean();
}

TEST_F(PortsTest, DeletingAPortReleasesTheMessagesInIt) {
  ASSERT_TRUE(ch_->CreatePort("p", 8).ok());
  const uint64_t before = Live();
  std::vector<shm::Ref> refs = Allocate(a_, 3);
  ASSERT_EQ(*ch_->SendToPort(a_, "p", refs), 3u);
  EXPECT_EQ(Live(), before + 3);
  ASSERT_TRUE(ch_->DeleteRoot("p").ok());
  EXPECT_EQ(Live(), before - 1) << "the port and its three messages are freed";
  ExpectCensusClean();
}

TEST_F(PortsTest, PortsAndTheirMessagesSurviveARestart) {
  ASSERT_TRUE(ch_->CreatePort("p", 8).ok());
  std::vector<shm::Ref> refs = Allocate(a_, 2);
  ASSERT_EQ(*ch_->SendToPort(a_, "p", refs), 2u);
  Restart();
  ExpectCensusClean();
  auto got = ch_->ReceiveFromPort(b_, "p", 10);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, refs);
}

// The daemon killed inside its own move (lane 0): the restart finishes a
// send it had started and puts back a message it was taking. Either way
// the message is in the port once; the census agrees.
TEST_F(PortsTest, ARestartFinishesTheDaemonsSendAndPutsBackItsReceive) {
  ASSERT_TRUE(ch_->CreatePort("p", 4).ok());
  std::vector<shm::Ref> refs = Allocate(a_, 2);
  ASSERT_EQ(*ch_->SendToPort(a_, "p", {refs[0]}), 1u);
  WithRing("p", [&](shm::PortRing ring, const shm::InstancePtr&) {
    // A receive of the first message taken, not emptied.
    shm::MoveLane lane{};
    ASSERT_TRUE(ring.BeginReceive({&lane, 0, nullptr, 0, 0}).ok());
    // A send of the second, stopped after its reference reached the cell
    // (the ledger still lists it: the daemon removes it after the send).
    uint64_t slot = refs[1].bits();
    shm::MoveLane lane2{};
    shm::internal::StopPortMoveAfterStepForTesting(4);
    EXPECT_EQ(ring.TrySend({&lane2, 0, &slot, 0, 0}).code(), absl::StatusCode::kAborted);
  });
  Restart();
  ExpectCensusClean();
  auto got = ch_->ReceiveFromPort(b_, "p", 10);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, refs) << "both messages in the port, in order";
  ExpectCensusClean();
  // The interrupted send left refs[1] in the sender's ledger too: one
  // reference too many, released with the session.
  EXPECT_EQ(ch_->RefsHeld(a_), 1u);
}

// A member writes random bytes over a port: the daemon's calls answer
// (errors are fine), its check reports, a restart repairs, and another
// channel is untouched.
TEST_F(PortsTest, ScribbledPortMemoryHarmsNoOtherChannelAndNeverTheDaemon) {
  auto other = core_->CreateChannel(a_, "other", 0, 0);
  ASSERT_TRUE(other.ok());
  auto och = *core_->Joined(a_, "other");
  auto otype = (*och->RegisterType("N", Node())).type->token;
  auto kept = *och->Allocate(a_, otype, 1);
  ASSERT_TRUE(och->SetRoot("kept", kept[0]).ok());
  std::mt19937_64 rng(18);
  for (int round = 0; round < 30; ++round) {
    const std::string name = "p" + std::to_string(round);
    ASSERT_TRUE(ch_->CreatePort(name, 8).ok());
    std::vector<shm::Ref> refs = Allocate(a_, 3);
    ASSERT_EQ(*ch_->SendToPort(a_, name, refs), 3u);
    WithRing(name, [&](shm::PortRing, const shm::InstancePtr& inst) {
      const size_t bytes = shm::PortRing::BytesFor(8);
      for (int n = 0; n < 1 + round; ++n) {
        inst.payload()[rng() % bytes] = static_cast<uint8_t>(rng());
      }
    });
    (void)ch_->ListPorts();
    (void)ch_->ReceiveFromPort(b_, name, 10);
    std::vector<shm::Ref> more = Allocate(a_, 1);
    (void)ch_->SendToPort(a_, name, more);
    (void)ch_->Check();
  }
  ch_.reset();
  och.reset();
  Reopen();
  ch_ = *core_->Find("ch");
  (void)ch_->Check();
  och = *core_->Find("other");
  CheckReport other_check = och->Check();
  EXPECT_TRUE(other_check.problems.empty());
  EXPECT_EQ(och->GetRoot("kept")->ref, kept[0]);
}

}  // namespace
}  // namespace structd::server
