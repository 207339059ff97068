// A member of the daemon's uid doing to the daemon's files what the kernel
// lets it do (issue 13): truncate an extent, the arena header or a ledger
// while the daemon maps them; scribble the header's geometry; keep writing
// instance headers while the daemon restarts. The daemon never dies, fails
// only the damaged channel (DATA_LOSS), keeps serving every other one, and
// a restart brings the damaged channel back with its intact extents.
// Seeds: STRUCTD_TEST_SEED; longer: STRUCTD_FAULT_SCALE.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/client/admin.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/shm/arena.h"
#include "testing/child_process.h"
#include "testing/client_connect.h"
#include "testing/client_types.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/shm_fixture.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;

// A channel driven over raw gRPC: this process never maps its arena, so it
// can cut the arena's files without taking SIGBUS itself.
struct RawChannel {
  std::string name, id, token;
};

RawChannel CreateRaw(GrpcClient& g, const std::string& name) {
  v1::CreateChannelRequest req;
  req.set_name(name);
  req.mutable_arena()->set_extent_size(128 * 1024);
  v1::CreateChannelResponse resp;
  grpc::Status s = g.registry().CreateChannel(g.Ctx().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  v1::RegisterTypeRequest reg;
  reg.set_channel(name);
  reg.set_key("Rec");
  auto* f = reg.add_fields();
  f->set_name("v");
  f->set_type("u64");
  auto* b = reg.add_fields();
  b->set_name("pad");
  b->set_type("bytes[40]");
  v1::RegisterTypeResponse rr;
  s = g.registry().RegisterType(g.Ctx().get(), reg, &rr);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return {name, resp.channel_id(), rr.type().token()};
}

grpc::Status AllocRaw(GrpcClient& g, const RawChannel& c, uint32_t n,
                      std::vector<uint64_t>* refs = nullptr) {
  v1::AllocateBatchRequest req;
  req.set_channel(c.name);
  req.set_token(c.token);
  req.set_count(n);
  v1::AllocateBatchResponse resp;
  grpc::Status s = g.instances().AllocateBatch(g.Ctx().get(), req, &resp);
  if (refs != nullptr) refs->assign(resp.refs().begin(), resp.refs().end());
  return s;
}

grpc::Status RetainRaw(GrpcClient& g, const RawChannel& c, uint64_t ref) {
  v1::RetainRequest req;
  req.set_channel(c.name);
  req.add_refs(ref);
  v1::RetainResponse resp;
  return g.instances().Retain(g.Ctx().get(), req, &resp);
}

TEST(HostileFilesTest, ATruncatedFileFailsOnlyItsChannelAndARestartRepairsIt) {
  DaemonProcess daemon(FileBackedArenas());
  auto admin = AdminOf(daemon);
  // The bystander: a channel this process maps and uses through the library.
  auto me = ConnectTo(daemon);
  auto other = *me->CreateChannel("bystander");
  auto counter = *other.channel->Allocate<Counter>();

  const std::vector<std::string> victims = {"arena/extent.0", "arena/arena", "ledger"};
  std::vector<RawChannel> channels;
  std::vector<std::vector<uint64_t>> refs(victims.size());
  {
    GrpcClient g(daemon.target());
    for (size_t i = 0; i < victims.size(); ++i) {
      RawChannel c = CreateRaw(g, "victim" + std::to_string(i));
      // 2,000 records of 64 bytes: two extents of 128 KiB.
      ASSERT_TRUE(AllocRaw(g, c, 2000, &refs[i]).ok());
      channels.push_back(c);
    }
    for (size_t i = 0; i < victims.size(); ++i) {
      const RawChannel& c = channels[i];
      std::string dir = daemon.state_dir() + "/channels/" + c.id + "/";
      std::string file = victims[i] == "ledger" ? dir + "ledgers/" + g.session_id()
                                                : dir + victims[i];
      ASSERT_EQ(truncate(file.c_str(), 0), 0) << file;
      // The first request that touches the cut file finds the damage (a
      // retain of an instance in extent 0 touches all three files).
      (void)RetainRaw(g, c, refs[i].front());
      grpc::Status s = AllocRaw(g, c, 2000);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << victims[i] << ": "
                                                             << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr("restart the daemon")) << victims[i];
      // The daemon lives; the other channels work.
      ASSERT_EQ(*admin->CheckHealth(), client::Health::kServing) << victims[i];
      counter->hits().fetch_add(1);
      EXPECT_TRUE(other.channel->Allocate<Counter>().ok()) << victims[i];
    }
    auto listed = admin->Channels();
    ASSERT_TRUE(listed.ok());
    int damaged = 0;
    for (const auto& c : *listed) damaged += c.damage.empty() ? 0 : 1;
    EXPECT_EQ(damaged, 3);
    daemon.Kill9();
  }
  EXPECT_EQ(counter->hits().load(), 3u);
  daemon.Start();
  auto after = AdminOf(daemon);
  auto listed = after->Channels();
  ASSERT_TRUE(listed.ok());
  for (const RawChannel& c : channels) {
    bool found = false;
    for (const auto& l : *listed) {
      if (l.name != c.name) continue;
      found = true;
      EXPECT_TRUE(l.damage.empty()) << c.name << ": " << l.damage;
    }
    EXPECT_TRUE(found) << c.name << " was not recovered";
    auto check = after->Check(c.name);
    ASSERT_TRUE(check.ok()) << check.status();
    if (c.name == "victim2") {
      // Its ledger could not be read: kept aside, what it held stays
      // counted, and the check says so instead of freeing anything.
      ASSERT_FALSE(check->ok);
      EXPECT_THAT(check->problems[0].what, HasSubstr("damaged"));
    } else {
      EXPECT_TRUE(check->ok) << c.name << ": " << check->problems[0].what;
    }
    // The instances of the intact extent are still there.
    auto instances = after->Instances(c.name, shm::TypeToken(), 0);
    ASSERT_TRUE(instances.ok());
    uint64_t live = 0;
    for (const auto& t : instances->counts) live += t.count;
    EXPECT_GT(live, 0u) << c.name;
  }
  auto st = after->Status();
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->unrecovered.empty());
}

// 13.11: 16 bytes over the arena header's epoch and extent size made the
// channel unrecoverable at the next start although every extent was intact.
TEST(HostileFilesTest, AScribbledHeaderGeometryIsRepairedAtRestart) {
  DaemonProcess daemon(FileBackedArenas());
  RawChannel c;
  {
    GrpcClient g(daemon.target());
    c = CreateRaw(g, "geo");
    ASSERT_TRUE(AllocRaw(g, c, 3000).ok());
    daemon.Kill9();  // the session (this live process) can still resume
  }
  std::string header = daemon.state_dir() + "/channels/" + c.id + "/arena/arena";
  {
    std::fstream f(header, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(16);
    const uint64_t junk[2] = {0xdeadbeef, 3};
    f.write(reinterpret_cast<const char*>(junk), sizeof junk);
  }
  daemon.Start();
  auto admin = AdminOf(daemon);
  auto listed = admin->Channels();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name, "geo");
  EXPECT_TRUE(admin->Check("geo")->ok);
}

// 13.2: a member kept writing instance headers (type index flipping between
// its real value and 0, a refcount set wrong) while the daemon restarted;
// every start aborted in recovery, before the socket was served.
TEST(HostileFilesTest, RestartsSucceedWhileAMemberRewritesInstanceHeaders) {
  DaemonProcess daemon(FileBackedArenas());
  RawChannel c;
  std::vector<uint64_t> refs;
  {
    GrpcClient g(daemon.target());
    c = CreateRaw(g, "flip");
    v1::AllocateBatchRequest req;
    req.set_channel(c.name);
    req.set_token(c.token);
    req.set_count(500);
    v1::AllocateBatchResponse resp;
    ASSERT_TRUE(g.instances().AllocateBatch(g.Ctx().get(), req, &resp).ok());
    refs.assign(resp.refs().begin(), resp.refs().end());
    v1::SetRootRequest root;
    root.set_channel(c.name);
    root.set_name("keep");
    root.set_ref(refs[0]);
    v1::SetRootResponse rr;
    ASSERT_TRUE(g.instances().SetRoot(g.Ctx().get(), root, &rr).ok());
  }
  std::string arena_dir = daemon.state_dir() + "/channels/" + c.id + "/arena";
  ChildProcess flipper([&] {
    auto arena = shm::Arena::Open(arena_dir, shm::Access::kReadWrite);
    if (!arena.ok()) return 10;
    std::vector<shm::InstanceHeader*> headers;
    for (uint64_t r : refs) {
      auto inst = (*arena)->Resolve(shm::Ref::FromBits(r));
      if (inst.ok()) headers.push_back(&inst->header());
    }
    if (headers.empty()) return 11;
    uint32_t index = headers[0]->type_index.load();
    for (auto* h : headers) h->refcount.store(7);
    for (;;) {
      for (auto* h : headers) h->type_index.store(0);
      for (auto* h : headers) h->type_index.store(index);
    }
  });
  const int restarts = 5 * FaultScale();
  for (int i = 0; i < restarts; ++i) {
    daemon.Kill9();
    daemon.Start();
    auto admin = AdminOf(daemon);
    ASSERT_NE(admin, nullptr) << "restart " << i;
    auto health = admin->CheckHealth();
    ASSERT_TRUE(health.ok()) << "restart " << i << ": " << health.status();
    EXPECT_EQ(*health, client::Health::kServing);
    auto listed = admin->Channels();
    ASSERT_TRUE(listed.ok());
    ASSERT_EQ(listed->size(), 1u) << "restart " << i;
  }
  flipper.Kill(SIGKILL);
  flipper.Wait();
}

// Issue 13 "also" and 14.3: a channel the daemon cannot adopt keeps its
// files, is named in structctl status, and keeps its name reserved.
TEST(HostileFilesTest, AChannelThatCannotBeRecoveredIsListedAndKeepsItsName) {
  DaemonProcess daemon(FileBackedArenas());
  std::string id;
  {
    GrpcClient g(daemon.target());
    id = CreateRaw(g, "payroll").id;
    daemon.Kill9();
  }
  std::string meta = daemon.state_dir() + "/channels/" + id + "/meta.toml";
  std::filesystem::rename(meta, meta + ".saved");
  std::ofstream(meta) << "format = 1\nname = \"payroll\"\n";  // no id, no capabilities
  daemon.Start();
  auto admin = AdminOf(daemon);
  auto st = admin->Status();
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->unrecovered.size(), 1u);
  EXPECT_EQ(st->unrecovered[0].name, "payroll");
  EXPECT_THAT(st->unrecovered[0].reason, HasSubstr("meta.toml"));
  EXPECT_TRUE(std::filesystem::exists(daemon.state_dir() + "/channels/" + id + "/arena/extent.0"));
  GrpcClient g(daemon.target());
  v1::CreateChannelRequest req;
  req.set_name("payroll");
  v1::CreateChannelResponse resp;
  grpc::Status s = g.registry().CreateChannel(g.Ctx().get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  // Repaired and restarted: back, and no longer listed.
  std::filesystem::rename(meta + ".saved", meta);
  daemon.Kill9();
  daemon.Start();
  auto again = AdminOf(daemon);
  EXPECT_TRUE(again->Status()->unrecovered.empty());
  ASSERT_EQ(again->Channels()->size(), 1u);
}

}  // namespace
}  // namespace structd::testing
