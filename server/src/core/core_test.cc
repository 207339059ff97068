#include "core/core.h"

#include <unistd.h>

#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/core_fixture.h"
#include "core/ledger.h"
#include "structd/shm/field.h"
#include "testing/temp_dir.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;
using shm::FieldKind;
using shm::FieldSpec;

using CoreTest = CoreFixture;

TEST_F(CoreTest, ARestartedCoreReadoptsChannelsTypesRootsAndInstances) {
  auto session = core_->Attach(me_, "app");
  ASSERT_TRUE(session.ok());
  auto created = core_->CreateChannel(session->id, "orders", 0, 0);
  ASSERT_TRUE(created.ok()) << created.status();
  auto ch = *core_->Joined(session->id, "orders");
  // A copy: the registered entry goes with the first core.
  const RegisteredType t = *ch->RegisterType("N", Node())->type;
  auto refs = *ch->Allocate(session->id, t.token, 3);
  ASSERT_TRUE(ch->SetRoot("head", refs[0]).ok());
  ASSERT_TRUE(ch->Seal().ok());
  ch->WithArena([&](shm::Arena& a, const TypeRegistry&) {
    shm::Scalar<uint64_t>(a.Resolve(refs[0])->payload()).store(42);
    return 0;
  });
  ch.reset();
  Reopen();

  auto again = core_->Find("orders");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->id(), created->id);
  auto type = (*again)->DescribeType(t.token);  // the same token
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ(type->type_index, t.type_index);
  EXPECT_EQ(type->layout.fingerprint(), t.layout.fingerprint());
  EXPECT_EQ((*again)->RegisterType("M", Point()).status().code(),
            absl::StatusCode::kFailedPrecondition);  // still sealed
  auto root = (*again)->GetRoot("head");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->ref, refs[0]);
  EXPECT_EQ((*again)->WithArena([&](shm::Arena& a, const TypeRegistry&) {
    return shm::Scalar<uint64_t>(a.Resolve(refs[0])->payload()).load();
  }), 42u);
  EXPECT_EQ((*again)->Stats().alloc.live_instances, 3u);
  EXPECT_TRUE((*again)->Check().problems.empty());
  EXPECT_EQ(core_->orphan_count(), 1u);

  // The same process resumes with its secret: same id, ledger handed back.
  auto resumed = core_->Attach(me_, "app", session->id, session->secret);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->id, session->id);
  EXPECT_EQ(core_->orphan_count(), 0u);
  ASSERT_TRUE(core_->Joined(session->id, "orders").ok());
  EXPECT_EQ((*again)->RefsHeld(session->id), 3u);
  // And can use it: the capabilities survived too.
  std::string other = Attach("other");
  EXPECT_TRUE(core_->JoinChannel(other, "orders", created->member_capability).ok());
}

// What a daemon killed between two steps of an operation can leave: a
// refcount one too high (retained, ledger not yet written), an instance
// nobody refers to (allocated, ledger not yet written), a ledger entry for
// a freed instance. A restart repairs all of it.
TEST_F(CoreTest, RestartRepairsWhatAnInterruptedOperationLeft) {
  auto session = core_->Attach(me_, "app");
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE(core_->CreateChannel(session->id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(session->id, "ch");
  const RegisteredType t = *ch->RegisterType("N", Node())->type;
  auto refs = *ch->Allocate(session->id, t.token, 4);
  // refs[0] -> refs[1] through a field; the session gave refs[1] up.
  ASSERT_TRUE(ch->StoreRefs(session->id, {{refs[0], 1, refs[1], true}}).ok());
  ch->WithArena([&](shm::Arena& a, const TypeRegistry&) {
    a.Resolve(refs[0])->header().refcount.fetch_add(1);  // retained, never recorded
    a.Resolve(refs[2])->header().refcount.store(3);       // wildly off
    return 0;
  });
  // A leak, as if allocated but its ledger entry never written.
  ASSERT_TRUE(ch->Release(session->id, {refs[3]}).ok());
  auto leaked = *ch->Allocate(session->id, t.token, 1);
  ASSERT_FALSE(ch->Check().problems.empty());
  ch.reset();
  // Remove the leaked one's ledger entry behind the channel's back.
  {
    auto ledger = Ledger::Open(dir_.path() + "/channels/" +
                               (*core_->Find("ch"))->id() + "/ledgers/" + session->id);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ASSERT_TRUE((*ledger)->Remove(leaked[0]));
  }
  Reopen();
  auto again = *core_->Find("ch");
  CheckReport report = again->Check();
  for (const auto& p : report.problems) ADD_FAILURE() << p.ref.ToString() << ": " << p.what;
  EXPECT_EQ(again->Stats().alloc.live_instances, 3u);  // refs 0, 1, 2; the leak freed
}

TEST_F(CoreTest, SessionsThatDoNotResumeAreReleasedOnceTheirLeaseRunsOut) {
  options_.lease = std::chrono::milliseconds(100);
  Reopen();
  auto session = core_->Attach(me_, "app");
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE(core_->CreateChannel(session->id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(session->id, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(session->id, t.type->token, 5);
  ASSERT_TRUE(ch->SetRoot("kept", refs[0]).ok());
  ch.reset();
  Reopen();
  // A wrong secret, or another process, does not get the session.
  auto wrong = core_->Attach(me_, "app", session->id, std::string(32, '0'));
  ASSERT_TRUE(wrong.ok());
  EXPECT_NE(wrong->id, session->id);
  PeerCredentials stranger = me_;
  stranger.pid += 1;
  auto other = core_->Attach(stranger, "app", session->id, session->secret);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->id, session->id);
  EXPECT_EQ(core_->ReapOrphans(), 0u);  // alive and within the lease
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(core_->ReapOrphans(), 5u);
  auto again = *core_->Find("ch");
  EXPECT_EQ(again->Stats().alloc.live_instances, 1u);  // the root's
  EXPECT_TRUE(again->Check().problems.empty());
  EXPECT_EQ(core_->orphan_count(), 0u);
}

// A client scribbled the arena header's extent count while the daemon was
// down: the restarted daemon recounts the extent files and loses nothing.
TEST_F(CoreTest, ARestartRepairsAScribbledExtentCount) {
  auto session = core_->Attach(me_, "app");
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE(core_->CreateChannel(session->id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(session->id, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(session->id, t.type->token, 50000);  // > 1 extent
  ASSERT_TRUE(ch->SetRoot("first", refs[0]).ok());
  uint32_t extents = ch->WithArena([](shm::Arena& a, const TypeRegistry&) {
    uint32_t n = a.extent_count();
    a.header().extent_count.store(9999);
    return n;
  });
  ASSERT_GT(extents, 1u);
  ch.reset();
  Reopen();
  auto again = core_->Find("ch");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->WithArena([](shm::Arena& a, const TypeRegistry&) {
    return a.raw_extent_count();
  }), extents);
  EXPECT_EQ((*again)->Stats().alloc.live_instances, 50000u);
  EXPECT_TRUE((*again)->Check().problems.empty());
}

// A client in a pid namespace the daemon cannot see has pid 0: after a
// restart its session can still resume, and only the lease (not a pid
// check, which would find "no such process") decides when it is gone.
TEST_F(CoreTest, AClientWithAnInvisiblePidIsKeptForItsLeaseAndCanResume) {
  options_.lease = std::chrono::milliseconds(300);
  Reopen();
  PeerCredentials invisible = me_;
  invisible.pid = 0;
  auto resuming = core_->Attach(invisible, "resumes");
  auto vanishing = core_->Attach(invisible, "vanishes");
  ASSERT_TRUE(resuming.ok() && vanishing.ok());
  auto created = core_->CreateChannel(resuming->id, "ch", 0, 0);
  ASSERT_TRUE(created.ok());
  auto ch = *core_->Joined(resuming->id, "ch");
  auto t = *ch->RegisterType("N", Node());
  ASSERT_TRUE(ch->Allocate(resuming->id, t.type->token, 2).ok());
  auto member = core_->JoinChannel(vanishing->id, "ch", created->member_capability);
  ASSERT_TRUE(member.ok()) << member.status();
  ASSERT_TRUE(ch->Allocate(vanishing->id, t.type->token, 3).ok());
  ch.reset();
  Reopen();
  EXPECT_EQ(core_->ReapOrphans(), 0u);  // pid 0 is not "no such process"
  EXPECT_EQ(core_->orphan_count(), 2u);
  auto back = core_->Attach(invisible, "resumes", resuming->id, resuming->secret);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, resuming->id);
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  EXPECT_EQ(core_->ReapOrphans(), 3u);  // only the one that never came back
  auto again = *core_->Find("ch");
  EXPECT_EQ(again->Stats().alloc.live_instances, 2u);
  EXPECT_EQ(again->RefsHeld(resuming->id), 2u);
  EXPECT_TRUE(again->Check().problems.empty());
}

TEST_F(CoreTest, CreateChannelReturnsDistinctCapabilitiesAndJoinsTheCreator) {
  std::string s = Attach();
  auto c = core_->CreateChannel(s, "orders", 0, 0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->owner_capability.size(), 32u);
  EXPECT_EQ(c->member_capability.size(), 32u);
  EXPECT_NE(c->owner_capability, c->member_capability);
  EXPECT_TRUE(std::filesystem::exists(ChannelDir("orders") + "/arena/arena"));
  EXPECT_TRUE(core_->Joined(s, "orders").ok());
  EXPECT_TRUE(core_->Joined(s, c->id).ok());
  EXPECT_EQ(core_->CreateChannel(s, "orders", 0, 0).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(core_->CreateChannel(s, "bad name!", 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_->CreateChannel(s, "odd", 12345, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CoreTest, JoinChecksTheCapability) {
  std::string owner = Attach("owner");
  auto c = core_->CreateChannel(owner, "ch", 0, 0);
  ASSERT_TRUE(c.ok());
  std::string other = Attach("other");
  EXPECT_EQ(core_->Joined(other, "ch").status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto bad = core_->JoinChannel(other, "ch", std::string(32, '0'));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kPermissionDenied);
  auto member = core_->JoinChannel(other, "ch", c->member_capability);
  ASSERT_TRUE(member.ok());
  EXPECT_EQ(member->role, Role::kMember);
  EXPECT_EQ(core_->JoinChannel(other, "nope", c->member_capability)
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  // Owner-only operations need the owner capability, not the member's.
  EXPECT_EQ(core_->OwnedChannel("ch", c->member_capability).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(core_->OwnedChannel("ch", c->owner_capability).ok());
}

TEST_F(CoreTest, SameKeyAndLayoutMeetDifferentLayoutIsRejectedWithBoth) {
  std::string s = Attach();
  ASSERT_TRUE(core_->CreateChannel(s, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s, "ch");
  auto a = ch->RegisterType("geo.Point", Point());
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->created);
  auto b = ch->RegisterType("geo.Point", Point());
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->created);
  EXPECT_EQ(a->type->token, b->type->token);
  auto c = ch->RegisterType("geo.Point", {FieldSpec::Scalar("x", FieldKind::kF32)});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("registered:"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("requested:"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("f32"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("f64"));
  auto bad = ch->RegisterType("geo.Bad", {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CoreTest, TokensOfAnotherChannelAreNotFoundLikeUnknownOnes) {
  std::string s = Attach();
  ASSERT_TRUE(core_->CreateChannel(s, "a", 0, 0).ok());
  ASSERT_TRUE(core_->CreateChannel(s, "b", 0, 0).ok());
  auto a = *core_->Joined(s, "a");
  auto b = *core_->Joined(s, "b");
  auto t = a->RegisterType("P", Point());
  ASSERT_TRUE(t.ok());
  auto foreign = b->DescribeType(t->type->token);
  auto guessed = b->DescribeType(shm::TypeToken{1, 2});
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(guessed.status().code(), absl::StatusCode::kNotFound);
  bool sealed = true;
  EXPECT_TRUE(b->ListTypes(&sealed).empty());
  EXPECT_FALSE(sealed);
  EXPECT_EQ(a->ListTypes(nullptr).size(), 1u);
  EXPECT_EQ(b->Allocate(s, t->type->token, 1).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CoreTest, SealedRegistryRefusesNewKeysButMeetsExistingOnes) {
  std::string s = Attach();
  auto c = core_->CreateChannel(s, "ch", 0, 0);
  auto ch = *core_->Joined(s, "ch");
  ASSERT_TRUE(ch->RegisterType("P", Point()).ok());
  ASSERT_TRUE(ch->Seal().ok());
  auto n = ch->RegisterType("Q", Point());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(n.status().message()), HasSubstr("sealed"));
  EXPECT_TRUE(ch->RegisterType("P", Point()).ok());
}

TEST_F(CoreTest, DetachReleasesEverythingTheSessionOwned) {
  std::string keeper = Attach("keeper");
  auto created = core_->CreateChannel(keeper, "ch", 0, 0);
  ASSERT_TRUE(created.ok());
  auto ch = *core_->Joined(keeper, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto kept = ch->Allocate(keeper, t.type->token, 1);
  ASSERT_TRUE(kept.ok());

  std::string worker = Attach("worker");
  auto joined = core_->JoinChannel(worker, "ch", created->member_capability);
  ASSERT_TRUE(joined.ok());
  auto mine = ch->Allocate(worker, t.type->token, 100);
  ASSERT_TRUE(mine.ok());
  ASSERT_TRUE(ch->Retain(worker, *kept).ok());  // also holds the keeper's
  EXPECT_EQ(ch->RefsHeld(worker), 101u);
  EXPECT_EQ(ch->Stats().alloc.live_instances, 101u);

  EXPECT_EQ(core_->Detach(worker), 101u);
  EXPECT_EQ(ch->Stats().alloc.live_instances, 1u);  // nothing else freed
  EXPECT_EQ(ch->WithArena([&](const shm::Arena& a, const TypeRegistry&) {
    return a.Resolve((*kept)[0])->header().refcount.load();
  }), 1u);
  EXPECT_EQ(core_->Detach(worker), 0u);  // idempotent
}

TEST_F(CoreTest, ReleaseOnlyWhatTheSessionOwns) {
  std::string a = Attach("a");
  auto created = core_->CreateChannel(a, "ch", 0, 0);
  ASSERT_TRUE(created.ok());
  auto ch = *core_->Joined(a, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(a, t.type->token, 2);
  std::string b = Attach("b");
  ASSERT_TRUE(core_->JoinChannel(b, "ch", created->member_capability).ok());
  auto r = ch->Release(b, {refs[0]});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("does not own"));
  // All or none: the second ref is not owned twice, so nothing changes.
  auto twice = ch->Release(a, {refs[1], refs[1]});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ch->RefsHeld(a), 2u);
  auto ok = ch->Release(a, refs);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 2u);
}

TEST_F(CoreTest, StoreRefsMovesOrAddsOwnershipIntoRefFields) {
  std::string s = Attach();
  ASSERT_TRUE(core_->CreateChannel(s, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s, "ch");
  auto t = *ch->RegisterType("N", Node());  // fields: v (u64), next (ref)
  auto p = *ch->RegisterType("P", Point());
  auto refs = *ch->Allocate(s, t.type->token, 3);
  auto point = *ch->Allocate(s, p.type->token, 1);
  auto live = [&] { return ch->Stats().alloc.live_instances; };
  // a.next = b (moved: the session no longer holds b), b.next = c (added).
  auto r = ch->StoreRefs(s, {{refs[0], 1, refs[1], true},
                             {refs[1], 1, refs[2], false}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ch->RefsHeld(s), 3u);  // a, c, point
  EXPECT_TRUE(ch->Check().problems.empty());
  // Errors change nothing: a u64 field, an index past the end, a move of a
  // ref not held (b moved already), a stale value.
  auto code = [&](std::vector<Channel::RefStore> st) {
    return ch->StoreRefs(s, st).status().code();
  };
  EXPECT_EQ(code({{refs[0], 0, refs[2], false}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{refs[0], 7, refs[2], false}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{refs[2], 1, refs[2], true}, {refs[2], 1, refs[1], true}}),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ch->RefsHeld(s), 3u);  // the first move was undone
  EXPECT_EQ(code({{point[0], 1, refs[2], false}}), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ch->Check().problems.empty());
  // Releasing the chain's head frees a and b; c is still held.
  auto freed = ch->Release(s, {refs[0]});
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(*freed, 2u);
  EXPECT_EQ(live(), 2u);  // c and the point
  EXPECT_EQ(code({{refs[0], 1, refs[2], false}}), absl::StatusCode::kNotFound);
  // Clearing a field releases what it held.
  auto d = *ch->Allocate(s, t.type->token, 1);
  ASSERT_TRUE(ch->StoreRefs(s, {{d[0], 1, refs[2], true}}).ok());
  auto cleared = ch->StoreRefs(s, {{d[0], 1, shm::Ref(), false}});
  ASSERT_TRUE(cleared.ok());
  EXPECT_EQ(*cleared, 1u);  // c had no other owner
  EXPECT_TRUE(ch->Check().problems.empty());
}

TEST_F(CoreTest, StoreRefsChecksTypedRefFields) {
  std::string s = Attach();
  ASSERT_TRUE(core_->CreateChannel(s, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s, "ch");
  auto p = *ch->RegisterType("P", Point());
  auto holder = *ch->RegisterType(
      "H", {shm::FieldSpec::Ref("point", p.type->token)});
  auto n = *ch->RegisterType("N", Node());
  auto h = *ch->Allocate(s, holder.type->token, 1);
  auto pt = *ch->Allocate(s, p.type->token, 1);
  auto node = *ch->Allocate(s, n.type->token, 1);
  auto wrong = ch->StoreRefs(s, {{h[0], 0, node[0], false}});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("'N'"));
  EXPECT_TRUE(ch->StoreRefs(s, {{h[0], 0, pt[0], false}}).ok());
}

TEST_F(CoreTest, RootsKeepInstancesAliveAfterTheirCreatorLeaves) {
  std::string s = Attach();
  ASSERT_TRUE(core_->CreateChannel(s, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(s, t.type->token, 1);
  auto prev = ch->SetRoot("config", refs[0]);
  ASSERT_TRUE(prev.ok());
  EXPECT_TRUE(prev->is_null());
  EXPECT_EQ(ch->SetRoot("bad name", refs[0]).status().code(),
            absl::StatusCode::kInvalidArgument);
  core_->Detach(s);
  EXPECT_EQ(ch->Stats().alloc.live_instances, 1u);
  auto root = ch->GetRoot("config");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->ref, refs[0]);
  EXPECT_EQ(root->token, t.type->token);
  EXPECT_EQ(ch->ListRoots().size(), 1u);
  ASSERT_TRUE(ch->DeleteRoot("config").ok());
  EXPECT_EQ(ch->Stats().alloc.live_instances, 0u);
  EXPECT_EQ(ch->GetRoot("config").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ch->DeleteRoot("config").code(), absl::StatusCode::kNotFound);
}

TEST_F(CoreTest, DroppedChannelDisappearsAndIsDeletedWhenSessionsLeave) {
  std::string s = Attach();
  auto c = core_->CreateChannel(s, "ch", 0, 0);
  ASSERT_TRUE(c.ok());
  std::string dir = ChannelDir("ch");
  EXPECT_EQ(core_->DropChannel("ch", c->member_capability).code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(core_->DropChannel("ch", c->owner_capability).ok());
  EXPECT_EQ(core_->Find("ch").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::exists(dir));  // s is still joined
  core_->Detach(s);
  EXPECT_FALSE(std::filesystem::exists(dir));
  // The name is free again.
  std::string s2 = Attach();
  EXPECT_TRUE(core_->CreateChannel(s2, "ch", 0, 0).ok());
}

TEST_F(CoreTest, SessionsAreBoundToTheirProcess) {
  std::string s = Attach();
  EXPECT_TRUE(core_->CheckSession(s, me_).ok());
  PeerCredentials other = me_;
  other.pid = me_.pid + 1;
  other.process = nullptr;  // a process the kernel could give no pidfd for
  EXPECT_EQ(core_->CheckSession(s, other).code(),
            absl::StatusCode::kPermissionDenied);
  PeerCredentials other_uid = me_;  // the same process, under another uid: no
  other_uid.uid = me_.uid + 1;
  EXPECT_EQ(core_->CheckSession(s, other_uid).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(core_->CheckSession("", me_).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(core_->CheckSession("nope", me_).code(),
            absl::StatusCode::kUnauthenticated);
  PeerCredentials unknown;
  EXPECT_EQ(core_->Attach(unknown, "x").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(CoreTest, ExpiredLeasesAreReported) {
  CoreOptions o;
  o.state_dir = dir_.Sub("b");
  o.lease = std::chrono::milliseconds(10);
  o.allow_unbound_peers = true;
  auto core = *Core::Open(o);
  PeerCredentials unobservable = me_;  // no pidfd: only the lease decides
  unobservable.process = nullptr;
  auto s = core->Attach(unobservable, "idle");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(core->ExpiredSessions().empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(core->ExpiredSessions(), std::vector<std::string>{s->id});
  core->Heartbeat(s->id);
  EXPECT_TRUE(core->ExpiredSessions().empty());
}

TEST_F(CoreTest, CheckPassesOnAHealthyArenaAndNamesTheDamagedInstance) {
  std::string s = Attach();
  ASSERT_TRUE(core_->CreateChannel(s, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(s, t.type->token, 3);
  // refs[0] -> refs[1] through a field, which owns one reference of its
  // own (counted here by hand, as a daemon-side store into a field does),
  // and refs[2] under a root.
  ch->WithArena([&](const shm::Arena& a, const TypeRegistry&) {
    shm::RefField(a.Resolve(refs[0])->payload() + 8).store(refs[1]);
    a.Resolve(refs[1])->header().refcount.fetch_add(1);
    return 0;
  });
  ASSERT_TRUE(ch->SetRoot("top", refs[2]).ok());
  CheckReport ok = ch->Check();
  EXPECT_EQ(ok.instances_checked, 3u);
  EXPECT_TRUE(ok.problems.empty()) << ok.problems[0].what;
  // Corrupt one refcount on purpose.
  ch->WithArena([&](const shm::Arena& a, const TypeRegistry&) {
    a.Resolve(refs[2])->header().refcount.store(7);
    return 0;
  });
  CheckReport bad = ch->Check();
  ASSERT_EQ(bad.problems.size(), 1u);
  EXPECT_EQ(bad.problems[0].ref, refs[2]);
  EXPECT_THAT(bad.problems[0].what, HasSubstr("refcount 7, but 2 references"));
}

TEST_F(CoreTest, InspectDecodesFieldsAndFollowsRefs) {
  std::string s = Attach();
  ASSERT_TRUE(core_->CreateChannel(s, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(s, t.type->token, 2);
  ch->WithArena([&](const shm::Arena& a, const TypeRegistry&) {
    shm::Scalar<uint64_t>(a.Resolve(refs[0])->payload()).store(42);
    shm::RefField(a.Resolve(refs[0])->payload() + 8).store(refs[1]);
    shm::Scalar<uint64_t>(a.Resolve(refs[1])->payload()).store(7);
    return 0;
  });
  auto v = ch->Inspect(refs[0], 1);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->key, "N");
  ASSERT_EQ(v->fields.size(), 2u);
  EXPECT_EQ(v->fields[0].value, "42");
  EXPECT_EQ(v->fields[1].value, refs[1].ToString());
  ASSERT_EQ(v->fields[1].target.size(), 1u);
  EXPECT_EQ(v->fields[1].target[0].fields[0].value, "7");
  EXPECT_EQ(ch->Inspect(refs[0], 9).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto listing = ch->ListInstances({}, 1);
  ASSERT_EQ(listing.counts.size(), 1u);
  EXPECT_EQ(listing.counts[0].count, 2u);
  EXPECT_EQ(listing.instances.size(), 1u);
  EXPECT_TRUE(listing.truncated);
}

}  // namespace
}  // namespace structd::server
