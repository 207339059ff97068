// The daemon's state under attack from outside the API: the tmpfs holding
// the arena fills up while it grows, and the arena, its ledgers and its
// metadata get random bytes written into them. Requests fail with clear
// errors; the daemon never crashes; clients keep working. Seeds:
// STRUCTD_TEST_SEED.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/client/admin.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/shm/port_ring.h"
#include "structd/v1/instances.grpc.pb.h"
#include "testing/client_connect.h"
#include "testing/client_types.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/shm_fixture.h"
#include "testing/temp_dir.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;

// A daemon whose posix_fallocate fails with ENOSPC while `flag` exists.
std::unique_ptr<DaemonProcess> DaemonWithFullableTmpfs(const std::string& flag) {
  setenv("LD_PRELOAD", STRUCTD_TEST_ENOSPC, 1);
  setenv("STRUCTD_TEST_ENOSPC_FLAG", flag.c_str(), 1);
  // Under ASan the preloaded shim comes before the ASan runtime, which
  // refuses to start unless told that this order is intended.
  const char* asan = getenv("ASAN_OPTIONS");
  std::string saved_asan = asan ? asan : "";
  setenv("ASAN_OPTIONS", (saved_asan + ":verify_asan_link_order=0").c_str(), 1);
  auto d = std::make_unique<DaemonProcess>(FileBackedArenas());
  unsetenv("LD_PRELOAD");
  unsetenv("STRUCTD_TEST_ENOSPC_FLAG");
  if (asan) {
    setenv("ASAN_OPTIONS", saved_asan.c_str(), 1);
  } else {
    unsetenv("ASAN_OPTIONS");
  }
  return d;
}

TEST(HostileStateTest, TmpfsFullWhileTheArenaGrowsIsResourceExhaustedAndNothingBreaks) {
  TempDir dir;
  std::string flag = dir.Sub("tmpfs-full");
  auto daemon = DaemonWithFullableTmpfs(flag);
  auto me = ConnectTo(*daemon);
  auto ch = me->CreateChannel("c");
  ASSERT_TRUE(ch.ok()) << ch.status();
  client::Channel& c = *ch->channel;
  auto counter = c.Allocate<Counter>();
  ASSERT_TRUE(counter.ok()) << counter.status();
  uint32_t extents = c.arena().extent_count();

  std::ofstream(flag).put('x');  // tmpfs is full from now on
  // 1 MiB extents: 40,000 nodes of 32 bytes need another one.
  auto big = c.AllocateBatch<Node>(40000);
  ASSERT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("space"));
  EXPECT_EQ(c.arena().extent_count(), extents);
  // Everyone keeps working: fields, small allocations from free space,
  // the health check, the consistency check.
  (*counter)->hits().fetch_add(5);
  EXPECT_EQ((*counter)->hits().load(), 5u);
  auto small = c.AllocateBatch<Node>(10);
  EXPECT_TRUE(small.ok()) << small.status();
  auto admin = AdminOf(*daemon);
  EXPECT_EQ(*admin->CheckHealth(), client::Health::kServing);
  auto check = admin->Check("c");
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->ok);

  std::filesystem::remove(flag);  // space again
  auto again = c.AllocateBatch<Node>(40000);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_GT(c.arena().extent_count(), extents);
  EXPECT_TRUE(admin->Check("c")->ok);
  ASSERT_TRUE(c.Release(*again).ok());  // one call, not 40,000 Owned destructors
  ASSERT_TRUE(c.Release(*small).ok());
}

// Scribbles `n` random bytes at random places of `path` (a file of the
// daemon's state), through a shared mapping.
void Scribble(const std::string& path, std::mt19937_64& rng, int n) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  struct stat st;
  fstat(fd, &st);
  if (st.st_size > 0) {
    void* p = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED);
    auto* bytes = static_cast<uint8_t*>(p);
    for (int i = 0; i < n; ++i) bytes[rng() % st.st_size] = static_cast<uint8_t>(rng());
    munmap(p, st.st_size);
  }
  close(fd);
}

// kill -9 of the daemon, a start on what it left, and it serves.
void RestartAndExpectServing(DaemonProcess& daemon) {
  daemon.Kill9();
  daemon.Start();
  auto admin = AdminOf(daemon);
  ASSERT_NE(admin, nullptr);
  auto health = admin->CheckHealth();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::Health::kServing);
}

TEST(HostileStateTest, RandomBytesInTheArenaLedgersAndMetadataNeverCrashTheDaemon) {
  std::mt19937_64 rng(TestSeed());
  DaemonProcess daemon(FileBackedArenas());
  auto me = ConnectTo(daemon);
  auto ch = me->CreateChannel("c");
  ASSERT_TRUE(ch.ok()) << ch.status();
  client::Channel& c = *ch->channel;
  auto nodes = c.AllocateBatch<Node>(500);
  ASSERT_TRUE(nodes.ok());
  client::RefStores links;
  for (size_t i = 0; i + 1 < nodes->size(); i += 2) links.Copy((*nodes)[i]->next(), (*nodes)[i + 1].ref());
  ASSERT_TRUE(c.Store(links).ok());
  ASSERT_TRUE(c.SetRoot("head", (*nodes)[0].ref()).ok());
  std::vector<client::Ref> refs;
  for (auto& n : *nodes) refs.push_back(n.Disown());  // the session's ledger keeps them

  const std::string state = daemon.state_dir() + "/channels/" + c.id();
  auto admin = AdminOf(daemon);
  // Rounds of damage, each followed by every kind of request.
  const int rounds = 6 * FaultScale();
  for (int round = 0; round < rounds; ++round) {
    std::string target;
    switch (round % 3) {
      case 0: target = state + "/arena/extent.0"; break;  // headers, refcounts, slabs
      case 1: target = state + "/arena/arena"; break;     // the arena header, extent table
      default:                                            // a ledger
        for (const auto& e : std::filesystem::directory_iterator(state + "/ledgers")) {
          target = e.path().string();
        }
    }
    Scribble(target, rng, 64);
    auto pick = [&] { return refs[rng() % refs.size()]; };
    // Every call returns some status; none may take the daemon down.
    (void)c.Retain<Node>(pick());
    (void)c.Release({pick()});
    (void)c.AllocateBatch<Node>(1 + rng() % 100);
    if (auto v = c.View<Node>(pick()); v.ok()) {
      client::RefStores st;
      st.Copy(v->next(), pick());
      (void)c.Store(st);
    }
    (void)admin->Inspect("c", pick(), 8);
    (void)admin->Instances("c", shm::TypeToken(), 100);
    (void)admin->Memory("c");
    auto check = admin->Check("c");
    ASSERT_TRUE(check.ok()) << "round " << round << ": " << check.status();
    auto health = admin->CheckHealth();
    ASSERT_TRUE(health.ok()) << "round " << round << ": the daemon stopped answering";
    EXPECT_EQ(*health, client::Health::kServing);
  }
  // And a daemon restarted on the damaged state starts and serves (the
  // channel recovered, or reported and skipped).
  ASSERT_NO_FATAL_FAILURE(RestartAndExpectServing(daemon));
  EXPECT_TRUE(AdminOf(daemon)->Channels().ok());
  // Damaged metadata: the daemon still starts, naming the file.
  Scribble(state + "/meta.toml", rng, 200);
  ASSERT_NO_FATAL_FAILURE(RestartAndExpectServing(daemon));
}

// Issue 17: members recycle instances in place by writing their headers
// (shm/local_recycle.h), so the daemon reads headers that members change
// under it. A member writing random refcounts, generations and type
// indexes into its channel's headers while every operation runs there
// (local allocate and drop, Retain and Release through the daemon) may
// spoil that channel; the daemon keeps serving, and another channel's
// instances and census stay exact, through a restart too.
TEST(HostileStateTest, AMemberScribblingHeadersWhileItsPeersRecycleHarmsOnlyItsChannel) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  DaemonProcess daemon;
  auto me = ConnectTo(daemon);
  auto a = me->CreateChannel("a");
  auto b = me->CreateChannel("b");
  ASSERT_TRUE(a.ok() && b.ok());
  client::Channel& ca = *a->channel;
  client::Channel& cb = *b->channel;
  auto kept = cb.AllocateBatch<Counter>(100);
  ASSERT_TRUE(kept.ok()) << kept.status();
  for (size_t i = 0; i < kept->size(); ++i) (*kept)[i]->hits().store(1000 + i);

  auto victims = ca.AllocateBatch<Counter>(200);
  ASSERT_TRUE(victims.ok()) << victims.status();
  std::vector<shm::InstanceHeader*> headers;
  std::vector<client::Ref> victim_refs;
  for (auto& v : *victims) {
    headers.push_back(&ca.arena().Resolve(v.ref())->header());
    victim_refs.push_back(v.ref());
  }
  std::atomic<bool> stop{false};
  std::thread scribbler([&] {
    std::mt19937_64 r(seed + 1);
    const uint32_t values[] = {0, 1, 2, UINT32_MAX, static_cast<uint32_t>(r())};
    while (!stop.load(std::memory_order_relaxed)) {
      shm::InstanceHeader& h = *headers[r() % headers.size()];
      const uint32_t v = values[r() % std::size(values)];
      switch (r() % 4) {
        case 0: h.refcount.store(v); break;
        case 1: h.generation.store(v); break;
        case 2: h.type_index.store(v % 4); break;
        default: h.flags.store(v); break;
      }
    }
  });
  const int rounds = 3000 * FaultScale();
  for (int i = 0; i < rounds; ++i) {
    for (int n = 0; n < 8; ++n) {  // local allocate and drop, both channels
      auto x = ca.Allocate<Counter>();
      if (x.ok()) (*x)->hits().store(i);
      auto y = cb.Allocate<Counter>();
      ASSERT_TRUE(y.ok()) << y.status();
    }
    if (i % 16 == 0) {  // and through the daemon
      client::Ref pick = victim_refs[rng() % victim_refs.size()];
      if (auto held = ca.Retain<Counter>(pick); held.ok()) held->Reset();
      (void)ca.Flush();
      if (i % 64 == 0 && !victims->empty()) victims->pop_back();
    }
  }
  stop.store(true);
  scribbler.join();

  auto admin = AdminOf(daemon);
  ASSERT_NE(admin, nullptr);
  auto health = admin->CheckHealth();
  ASSERT_TRUE(health.ok()) << "the daemon stopped answering: " << health.status();
  EXPECT_EQ(*health, client::Health::kServing);
  auto verify_b = [&] {
    for (size_t i = 0; i < kept->size(); ++i) ASSERT_EQ((*kept)[i]->hits().load(), 1000 + i);
    ASSERT_TRUE(cb.Flush().ok());
    auto check = AdminOf(daemon)->Check("b");
    ASSERT_TRUE(check.ok()) << check.status();
    EXPECT_TRUE(check->ok) << "channel b was touched";
  };
  verify_b();
  (void)admin->Check("a");  // answers, whatever it finds
  ASSERT_NO_FATAL_FAILURE(RestartAndExpectServing(daemon));
  for (int i = 0; i < 500 && !me->attached(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  verify_b();
}

// Issue 18: a member writes random bytes over a port while another member
// sends to it and receives from it through the daemon. The daemon answers
// throughout and after a restart; another channel, with a port and
// messages of its own, is untouched.
TEST(HostileStateTest, AMemberScribblingAPortWhileOthersUseItHarmsOnlyItsChannel) {
  const uint64_t seed = TestSeed();
  DaemonProcess daemon;
  auto me = ConnectTo(daemon);
  auto a = me->CreateChannel("a");
  auto b = me->CreateChannel("b");
  ASSERT_TRUE(a.ok() && b.ok());
  client::Channel& ca = *a->channel;
  client::Channel& cb = *b->channel;
  ASSERT_TRUE(ca.CreatePort("q", 16).ok());
  ASSERT_TRUE(cb.CreatePort("qb", 16).ok());
  auto kept = cb.AllocateBatch<Counter>(8);
  ASSERT_TRUE(kept.ok()) << kept.status();
  for (size_t i = 0; i < kept->size(); ++i) (*kept)[i]->hits().store(1000 + i);
  auto counter_a = ca.Use<Counter>();
  auto counter_b = cb.Use<Counter>();
  ASSERT_TRUE(counter_a.ok() && counter_b.ok());

  // Another member of each channel, through the raw calls.
  GrpcClient raw(daemon.target());
  ASSERT_TRUE(raw.Join("a", a->member_capability));
  ASSERT_TRUE(raw.Join("b", b->member_capability));
  auto allocate = [&](const std::string& channel, const shm::TypeToken& token, uint32_t n) {
    v1::AllocateBatchRequest req;
    req.set_channel(channel);
    req.set_token(token.ToHex());
    req.set_count(n);
    v1::AllocateBatchResponse resp;
    (void)raw.instances().AllocateBatch(raw.Ctx().get(), req, &resp);
    return std::vector<uint64_t>(resp.refs().begin(), resp.refs().end());
  };
  auto send = [&](const std::string& channel, const std::string& port,
                  const std::vector<uint64_t>& refs) {
    v1::SendToPortRequest req;
    req.set_channel(channel);
    req.set_name(port);
    for (uint64_t r : refs) req.add_refs(r);
    v1::SendToPortResponse resp;
    return raw.instances().SendToPort(raw.Ctx().get(), req, &resp);
  };
  auto receive = [&](const std::string& channel, const std::string& port) {
    v1::ReceiveFromPortRequest req;
    req.set_channel(channel);
    req.set_name(port);
    req.set_max(4);
    v1::ReceiveFromPortResponse resp;
    return raw.instances().ReceiveFromPort(raw.Ctx().get(), req, &resp);
  };
  // Channel b's messages, which must come through whole.
  std::vector<uint64_t> b_messages = allocate("b", counter_b->token, 4);
  ASSERT_EQ(b_messages.size(), 4u);
  ASSERT_TRUE(send("b", "qb", b_messages).ok());

  auto port = ca.GetRoot("q");
  ASSERT_TRUE(port.ok());
  uint8_t* bytes = ca.arena().Resolve(*port)->payload();
  const size_t port_bytes = shm::PortRing::BytesFor(16);
  std::atomic<bool> stop{false};
  std::thread scribbler([&] {
    std::mt19937_64 r(seed + 2);
    while (!stop.load(std::memory_order_relaxed)) {
      std::atomic_ref<uint8_t>(bytes[r() % port_bytes]).store(static_cast<uint8_t>(r()));
      if (r() % 64 == 0) std::this_thread::yield();
    }
  });
  const int rounds = 400 * FaultScale();
  for (int i = 0; i < rounds; ++i) {
    (void)send("a", "q", allocate("a", counter_a->token, 2));
    (void)receive("a", "q");
    if (i % 50 == 0) (void)ca.ListPorts();
  }
  stop.store(true);
  scribbler.join();

  auto verify_b = [&] {
    for (size_t i = 0; i < kept->size(); ++i) ASSERT_EQ((*kept)[i]->hits().load(), 1000 + i);
    auto ports = AdminOf(daemon)->Ports("b");
    ASSERT_TRUE(ports.ok()) << ports.status();
    ASSERT_EQ(ports->size(), 1u);
    EXPECT_EQ(ports->front().depth, 4u) << "channel b's port was touched";
    auto check = AdminOf(daemon)->Check("b");
    ASSERT_TRUE(check.ok()) << check.status();
    EXPECT_TRUE(check->ok) << "channel b was touched";
  };
  auto health = AdminOf(daemon)->CheckHealth();
  ASSERT_TRUE(health.ok()) << "the daemon stopped answering: " << health.status();
  verify_b();
  (void)AdminOf(daemon)->Check("a");  // answers, whatever it finds
  (void)AdminOf(daemon)->Ports("a");
  ASSERT_NO_FATAL_FAILURE(RestartAndExpectServing(daemon));
  verify_b();
  // The messages of b's port come out whole after all that.
  GrpcClient again(daemon.target());
  ASSERT_TRUE(again.Join("b", b->member_capability));
  v1::ReceiveFromPortRequest req;
  req.set_channel("b");
  req.set_name("qb");
  req.set_max(10);
  v1::ReceiveFromPortResponse resp;
  ASSERT_TRUE(again.instances().ReceiveFromPort(again.Ctx().get(), req, &resp).ok());
  EXPECT_EQ(std::vector<uint64_t>(resp.refs().begin(), resp.refs().end()), b_messages);
}

}  // namespace
}  // namespace structd::testing
