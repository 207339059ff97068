// Regression tests for the defects of issue 13 that the domain core owns:
// each one failed before its fix (noted per test).

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/core.h"
#include "core/core_fixture.h"
#include "core/ledger.h"
#include "core/store_intent.h"
#include "structd/shm/field.h"
#include "structd/shm/local_recycle.h"
#include "structd/shm/mapping_guard.h"
#include "testing/child_process.h"
#include "testing/temp_dir.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;
using shm::FieldKind;
using shm::FieldSpec;
using structd::testing::ChildProcess;

class RecoveryTest : public CoreFixture {
 protected:
  uint64_t Live(const std::string& name) {
    return (*core_->Find(name))->Stats().alloc.live_instances;
  }
};

// 13.2: a member kept writing instance headers (type index flipping, a
// refcount set wrong) while the daemon restarted; Reconcile read an
// unchecked StatusOr and aborted every start.
TEST_F(RecoveryTest, RestartNeverAbortsWhileAMemberFlipsInstanceHeaders) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(s.id, t.type->token, 64);
  std::string arena_dir = ChannelDir("ch") + "/arena";
  const uint32_t index = t.type->type_index;
  ch.reset();
  auto member = shm::Arena::Open(arena_dir, shm::Access::kReadWrite);
  ASSERT_TRUE(member.ok());
  std::vector<shm::InstanceHeader*> headers;
  for (shm::Ref r : refs) headers.push_back(&(*member)->Resolve(r)->header());
  std::atomic<bool> stop{false};
  std::thread scribbler([&] {
    for (auto* h : headers) h->refcount.store(7);
    while (!stop.load()) {
      for (auto* h : headers) h->type_index.store(0);
      for (auto* h : headers) h->type_index.store(index);
    }
  });
  for (int i = 0; i < 30; ++i) Reopen();
  stop = true;
  scribbler.join();
  Reopen();
  EXPECT_TRUE(core_->Find("ch").ok());
}

// 13.3: Admin.ListChannels (Channel::Arena) on a channel that a drop had
// just destroyed dereferenced the reset arena and crashed the daemon.
TEST_F(RecoveryTest, ADestroyedChannelAnswersInsteadOfCrashing) {
  auto s = *core_->Attach(me_, "app");
  auto created = *core_->CreateChannel(s.id, "gone", 0, 0);
  auto ch = *core_->Joined(s.id, "gone");
  core_->Detach(s.id);
  ASSERT_TRUE(core_->DropChannel("gone", created.owner_capability).ok());
  // The admin snapshot still holds the channel.
  EXPECT_EQ(ch->arena_summary().extent_count, 0u);
  EXPECT_EQ(ch->Stats().alloc.live_instances, 0u);
  EXPECT_TRUE(ch->ListInstances({}, 10).instances.empty());
  EXPECT_EQ(ch->Usable().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ch->Allocate(s.id, shm::TypeToken{}, 1).status().code(),
            absl::StatusCode::kNotFound);
}

// 13.5: StoreRefs with move took the refs out of the ledger before writing
// the fields; a daemon killed between the two lost the reference. Now an
// intent is written first and a restart completes the call. Here the
// daemon "died" right after writing the intent, and again after applying
// the fields but not the ledger: both end as the completed call.
TEST_F(RecoveryTest, AnInterruptedStoreRefsIsCompletedAtRestart) {
  for (bool fields_applied : {false, true}) {
    SCOPED_TRACE(fields_applied);
    auto s = *core_->Attach(me_, "app");
    std::string name = fields_applied ? "b" : "a";
    ASSERT_TRUE(core_->CreateChannel(s.id, name, 0, 0).ok());
    auto ch = *core_->Joined(s.id, name);
    auto t = *ch->RegisterType("N", Node());
    auto refs = *ch->Allocate(s.id, t.type->token, 2);
    ASSERT_TRUE(ch->Retain(s.id, {refs[1]}).ok());  // owned twice
    StoreIntent intent;
    intent.session = s.id;
    intent.fields.push_back({refs[0], 8, refs[1]});  // Node.next is at 8
    intent.counts.push_back({refs[1], 1});          // one of two moved
    ASSERT_TRUE(WriteStoreIntent(ChannelDir(name) + "/store.intent", intent).ok());
    if (fields_applied) {
      ch->WithArena([&](shm::Arena& a, const TypeRegistry&) {
        shm::RefField(a.Resolve(refs[0])->payload() + 8).store(refs[1]);
        return 0;
      });
    }
    ch.reset();
    Reopen();
    auto again = *core_->Find(name);
    EXPECT_EQ(again->RefsHeld(s.id), 2u);  // refs[0] once, refs[1] once
    auto view = again->Inspect(refs[0], 0);
    ASSERT_TRUE(view.ok());
    EXPECT_EQ(view->fields[1].value, refs[1].ToString());
    auto check = again->Check();
    EXPECT_TRUE(check.problems.empty()) << check.problems[0].what;
    EXPECT_FALSE(std::filesystem::exists(ChannelDir(name) + "/store.intent"));
    ASSERT_TRUE(core_->Attach(me_, "app", s.id, s.secret).ok());
  }
}

// Issue 17: a client recycles the instance it alone owns in place
// (shm/local_recycle.h), without telling the daemon, and may die at any
// step of it. The ledger entry names the block: the census counts the
// instance there whatever its generation, a restart keeps it, the
// session's Release of the new ref works, and the session's end frees it
// exactly once from every step.
TEST_F(RecoveryTest, AnInstanceRecycledInPlaceIsCountedAndReleasedExactly) {
  enum Step { kClaimed, kGenerationBumped, kRecycled, kRecycledTwice, kClaimedByALiveProcess };
  for (Step step : {kClaimed, kGenerationBumped, kRecycled, kRecycledTwice,
                    kClaimedByALiveProcess}) {
    SCOPED_TRACE(step);
    // The session's process: killed below, as the kill matrix would.
    ChildProcess process([] {
      pause();
      return 0;
    });
    PeerCredentials peer = me_;
    peer.pid = process.pid();
    peer.process = ProcessHandle::OfPid(process.pid());
    ASSERT_NE(peer.process, nullptr);
    auto s = *core_->Attach(peer, "app");
    const std::string name = "r" + std::to_string(step);
    ASSERT_TRUE(core_->CreateChannel(s.id, name, 0, 0).ok());
    auto ch = *core_->Joined(s.id, name);
    auto t = *ch->RegisterType("P", Point());
    auto refs = *ch->Allocate(s.id, t.type->token, 2);  // refs[1]: another, untouched
    shm::Ref now = ch->WithArena([&](shm::Arena& a, const TypeRegistry&) {
      shm::InstancePtr inst = *a.Resolve(refs[0]);
      shm::InstanceHeader& h = inst.header();
      switch (step) {
        case kClaimed:
        case kClaimedByALiveProcess:
          h.refcount.store(0);
          return refs[0];
        case kGenerationBumped:
          h.refcount.store(0);
          h.generation.fetch_add(1);
          return refs[0];
        case kRecycled:
          return RecycleSoleInstance(inst, t.type->type_index, 16)->ref();
        case kRecycledTwice: {
          shm::InstancePtr once = *RecycleSoleInstance(inst, t.type->type_index, 16);
          return RecycleSoleInstance(once, t.type->type_index, 16)->ref();
        }
      }
      return shm::Ref();
    });
    ASSERT_FALSE(now.is_null());
    if (step == kRecycled || step == kRecycledTwice) {
      EXPECT_NE(now, refs[0]);
      auto check = ch->Check();
      EXPECT_TRUE(check.problems.empty()) << check.problems[0].what;
      // A restart's census keeps it: the ledger's entry names its block.
      ch.reset();
      Reopen();
      ch = *core_->Find(name);
      EXPECT_EQ(Live(name), 2u);
      check = ch->Check();
      EXPECT_TRUE(check.problems.empty()) << check.problems[0].what;
      ASSERT_TRUE(core_->Attach(peer, "app", s.id, s.secret).ok());
      EXPECT_EQ(ch->RefsHeld(s.id), 2u);
      if (step == kRecycledTwice) {
        // Released by its new name, like any reference the session holds.
        auto freed = ch->Release(s.id, {now});
        ASSERT_TRUE(freed.ok()) << freed.status();
        EXPECT_EQ(*freed, 1u);
        EXPECT_EQ(Live(name), 1u);
        EXPECT_EQ(ch->RefsHeld(s.id), 1u);
        EXPECT_EQ(ch->Release(s.id, {refs[0]}).status().code(), absl::StatusCode::kNotFound);
        core_->Detach(s.id);
        EXPECT_EQ(Live(name), 0u);
        continue;
      }
    }
    if (step == kClaimedByALiveProcess) {
      // Its session ends while it lives (a lease, an operator): it may be
      // finishing the recycle, so its claimed block is not freed under it.
      EXPECT_EQ(core_->Detach(s.id), 1u);
      EXPECT_EQ(Live(name), 1u) << "the claimed block is left to its live owner";
      EXPECT_EQ(core_->ReapClaims(), 0u) << "the owner still lives";
      kill(process.pid(), SIGKILL);
      process.Wait();
      EXPECT_EQ(core_->ReapClaims(), 1u) << "freed once its process has exited";
      EXPECT_EQ(Live(name), 0u);
      continue;
    }
    // The process dies here; then its session ends.
    kill(process.pid(), SIGKILL);
    process.Wait();
    EXPECT_EQ(core_->Detach(s.id), 2u);
    EXPECT_EQ(Live(name), 0u) << "freed exactly once, with the untouched one";
    auto check = ch->Check();
    EXPECT_TRUE(check.problems.empty()) << check.problems[0].what;
  }
}

TEST_F(RecoveryTest, StoreRefsLeavesNoIntentBehindAndMovesExactly) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(s.id, t.type->token, 3);
  ASSERT_TRUE(ch->Retain(s.id, {refs[2]}).ok());
  // Two stores moving the same ref: the session owns it twice.
  ASSERT_TRUE(
      ch->StoreRefs(s.id, {{refs[0], 1, refs[2], true}, {refs[1], 1, refs[2], true}}).ok());
  EXPECT_EQ(ch->RefsHeld(s.id), 2u);
  // A third move of it is refused, and changes nothing.
  EXPECT_EQ(ch->StoreRefs(s.id, {{refs[0], 1, refs[2], true}}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ch->Check().problems.empty());
  EXPECT_FALSE(std::filesystem::exists(ChannelDir("ch") + "/store.intent"));
}

// 13.6: a ledger that could not be read at start-up was skipped, so the
// census freed what it recorded, and the session still resumed and used
// freed memory.
TEST_F(RecoveryTest, AnUnreadableLedgerKeepsItsReferencesCountedAndBlocksTheResume) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "ch");
  auto t = *ch->RegisterType("N", Node());
  auto refs = *ch->Allocate(s.id, t.type->token, 5);
  std::string ledger = ChannelDir("ch") + "/ledgers/" + s.id;
  ch.reset();
  {
    std::fstream f(ledger, std::ios::in | std::ios::out | std::ios::binary);
    f.write("garbage!", 8);  // the magic
  }
  Reopen();
  EXPECT_EQ(Live("ch"), 5u);  // nothing freed
  EXPECT_TRUE(std::filesystem::exists(ledger + ".damaged"));
  auto resumed = core_->Attach(me_, "app", s.id, s.secret);
  ASSERT_TRUE(resumed.ok());
  EXPECT_NE(resumed->id, s.id);  // a new session: the old one is lost
  // Still so at the next start, while the file is there.
  Reopen();
  EXPECT_EQ(Live("ch"), 5u);
  auto check = (*core_->Find("ch"))->Check();
  ASSERT_FALSE(check.problems.empty());
  EXPECT_THAT(check.problems[0].what, HasSubstr("damaged"));
  // The operator removes it: the next start frees what nothing refers to.
  std::filesystem::remove(ledger + ".damaged");
  Reopen();
  EXPECT_EQ(Live("ch"), 0u);
}

// 13.11: 16 bytes over the header's epoch and extent size made the
// channel unrecoverable although every extent was intact.
TEST_F(RecoveryTest, ARestartRepairsAScribbledArenaHeader) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "ch");
  auto t = *ch->RegisterType("N", Node());
  ASSERT_TRUE(ch->Allocate(s.id, t.type->token, 3).ok());
  std::string header = ChannelDir("ch") + "/arena/arena";
  ch.reset();
  {
    std::fstream f(header, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(16);
    const uint64_t junk[2] = {0x5555, 7};
    f.write(reinterpret_cast<const char*>(junk), sizeof junk);
  }
  Reopen();
  ASSERT_TRUE(core_->Find("ch").ok());
  EXPECT_EQ(Live("ch"), 3u);
  EXPECT_TRUE(core_->Unrecovered().empty());
  EXPECT_TRUE((*core_->Find("ch"))->Check().problems.empty());
}

// 13 "also" and 14.3: a channel the daemon cannot adopt keeps its files
// and its name; a restored backup can never make two channels of one name.
TEST_F(RecoveryTest, AnUnrecoverableChannelIsKeptListedAndKeepsItsName) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "payroll", 0, 0).ok());
  std::string dir = ChannelDir("payroll");
  std::string meta = dir + "/meta.toml";
  std::filesystem::copy_file(meta, dir_.path() + "/meta.backup");
  {
    std::ifstream in(meta);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream out(meta, std::ios::trunc);
    out << text.substr(0, text.find("format")) << "format = 9\n" << text.substr(text.find('\n', text.find("format")) + 1);
  }
  Reopen();
  EXPECT_FALSE(core_->Find("payroll").ok());
  auto unrecovered = core_->Unrecovered();
  ASSERT_EQ(unrecovered.size(), 1u);
  EXPECT_EQ(unrecovered[0].name, "payroll");
  EXPECT_EQ(unrecovered[0].dir, dir);
  EXPECT_TRUE(std::filesystem::exists(dir + "/arena/extent.0"));
  auto s2 = *core_->Attach(me_, "app2");
  auto again = core_->CreateChannel(s2.id, "payroll", 0, 0);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("could not recover"));
  // The operator restores the backup: the channel comes back, once.
  std::filesystem::copy_file(dir_.path() + "/meta.backup", meta,
                             std::filesystem::copy_options::overwrite_existing);
  Reopen();
  EXPECT_TRUE(core_->Find("payroll").ok());
  EXPECT_TRUE(core_->Unrecovered().empty());
}

// 13.1 in the daemon core: a member truncates an extent file (or a ledger)
// under the daemon's mapping. The next request used to kill the daemon
// with SIGBUS. Now that channel answers DATA_LOSS, other channels work,
// and a restart puts the file back and keeps the other extents' data.
// In a child: the SIGBUS guard is process-wide.
TEST_F(RecoveryTest, ATruncatedFileFailsOnlyItsChannelAndARestartRepairsIt) {
  ChildProcess child([&]() -> int {
    shm::InstallSigbusGuard();
    CoreOptions o = options_;
    o.state_dir = dir_.Sub("child");
    o.arena.extent_size = 128 * 1024;
    auto core = *Core::Open(o);
    auto s = *core->Attach(me_, "app");
    if (!core->CreateChannel(s.id, "victim", 0, 0).ok()) return 10;
    if (!core->CreateChannel(s.id, "other", 0, 0).ok()) return 11;
    auto victim = *core->Joined(s.id, "victim");
    auto other = *core->Joined(s.id, "other");
    auto vt = *victim->RegisterType("N", Node());
    auto ot = *other->RegisterType("N", Node());
    // Enough for two extents: extent 1 keeps its instances after the repair.
    std::vector<shm::Ref> refs = *victim->Allocate(s.id, vt.type->token, 4000);
    if (victim->arena_summary().extent_count < 2) return 12;
    std::string vdir = o.state_dir + "/channels/" + victim->id();
    if (truncate((vdir + "/arena/extent.0").c_str(), 0) != 0) return 13;
    // The first request that touches the cut file finds it; from then on
    // every request on the channel fails.
    if (victim->Retain(s.id, {refs.front()}).code() != absl::StatusCode::kDataLoss) return 14;
    auto a = victim->Allocate(s.id, vt.type->token, 10);
    if (a.status().code() != absl::StatusCode::kDataLoss) return 15;
    if (!other->Allocate(s.id, ot.type->token, 10).ok()) return 16;
    // A ledger cut short: the same.
    std::string oledger = o.state_dir + "/channels/" + other->id() + "/ledgers/" + s.id;
    if (truncate(oledger.c_str(), 0) != 0) return 17;
    if (other->Allocate(s.id, ot.type->token, 10).status().code() !=
        absl::StatusCode::kDataLoss) {
      return 18;
    }
    victim.reset();
    other.reset();
    core.reset();
    // The restart repairs both channels.
    core = *Core::Open(o);
    auto v2 = core->Find("victim");
    if (!v2.ok()) return 19;
    uint64_t live = (*v2)->Stats().alloc.live_instances;
    if (live == 0 || live >= 4000) return 20;  // extent 0's are gone, the rest kept
    if (!(*v2)->Check().problems.empty()) return 21;
    if (!core->Find("other").ok()) return 22;
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
}

// A killed client's connection closes before the kernel reports its exit
// (its descriptors are closed first), so Detach may see it alive. What it
// released is counted as released after an exit once the exit shows
// (the metric structd_references_released_after_exit_total; a
// clean-clone run saw it stay 0 when only Detach decided).
TEST_F(RecoveryTest, ReferencesReleasedBeforeTheExitShowsAreCountedOnceItDoes) {
  ChildProcess process([] {
    pause();
    return 0;
  });
  auto s = *core_->Attach(PeerOf(process.pid()), "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "exits", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "exits");
  auto t = *ch->RegisterType("P", Point());
  ASSERT_TRUE(ch->Allocate(s.id, t.type->token, 3).ok());
  const uint64_t before = core_->events().released_after_exit.load();
  EXPECT_EQ(core_->Detach(s.id), 3u);  // the process is still alive here
  core_->CountExits();
  EXPECT_EQ(core_->events().released_after_exit.load(), before);
  process.Kill(SIGKILL);
  process.Wait();
  core_->CountExits();
  EXPECT_EQ(core_->events().released_after_exit.load(), before + 3);
  core_->CountExits();  // once
  EXPECT_EQ(core_->events().released_after_exit.load(), before + 3);
}

// 13.4: a paused client (SIGSTOP longer than the lease) had its session
// ended and its blocks handed to another process. A live process is never
// reaped by the lease; a dead one still is.
TEST_F(RecoveryTest, TheLeaseEndsOnlySessionsWhoseProcessIsGone) {
  CoreOptions o = options_;
  o.state_dir = dir_.Sub("lease");
  o.lease = std::chrono::milliseconds(10);
  o.allow_unbound_peers = true;  // for the one the kernel gives no pidfd for
  auto core = *Core::Open(o);
  ChildProcess paused([] {
    pause();
    return 0;
  });
  ChildProcess dead([] { return 0; });
  ASSERT_EQ(dead.Wait(), 0);
  PeerCredentials p = me_;
  p.pid = paused.pid();
  p.process = ProcessHandle::OfPid(paused.pid());
  ASSERT_NE(p.process, nullptr);
  kill(paused.pid(), SIGSTOP);
  auto attached = core->Attach(p, "paused");
  ASSERT_TRUE(attached.ok()) << attached.status();
  auto alive = *attached;
  PeerCredentials d = me_;
  d.pid = dead.pid();
  d.process = nullptr;  // reaped: no pidfd to be had
  auto unbound = core->Attach(d, "gone");
  ASSERT_TRUE(unbound.ok()) << unbound.status();
  auto gone = *unbound;
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  EXPECT_EQ(core->ExpiredSessions(), std::vector<std::string>{gone.id});
  kill(paused.pid(), SIGKILL);
  paused.Wait();
  EXPECT_THAT(core->ExpiredSessions(), ::testing::UnorderedElementsAre(alive.id, gone.id));
}

TEST_F(RecoveryTest, OneProcessCannotTakeEverySessionSlot) {
  CoreOptions o = options_;
  o.state_dir = dir_.Sub("limits");
  o.max_sessions_per_process = 3;
  auto core = *Core::Open(o);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(core->Attach(me_, "greedy").ok());
  auto more = core->Attach(me_, "greedy");
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(more.status().message(), HasSubstr("max_sessions_per_process"));
  PeerCredentials honest = me_;
  honest.pid = me_.pid + 100000;
  EXPECT_TRUE(core->Attach(honest, "honest").ok());
}

}  // namespace
}  // namespace structd::server
