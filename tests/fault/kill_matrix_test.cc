// The kill matrix: client processes doing random work (allocate, retain,
// release, store refs, lock mutexes, write strings, set roots; see the
// "chaos" mode of structd_test_client) are killed with SIGKILL at random
// moments, attach included, round after round. After each round the
// consistency check (the one `structctl check` runs) must find nothing:
// no leaked instance, no premature free, refcounts equal to the references
// that exist (messages in port "q", which every client also sends to and
// receives from through the daemon, included); and no mutex is stuck, no
// string is torn. Then the same with the daemon killed under load and
// restarted. Seeds: STRUCTD_TEST_SEED.
//
// Meanwhile this process is the honest one: a thread of it allocates,
// stamps, drops (recycling in place) and keeps Counters all along, through
// the kills and the daemon's restarts; after each round every Counter it
// holds must still carry its stamp.
//
// Short mode (ctest): 12 rounds of 3 clients, and 3 daemon kills, times
// STRUCTD_FAULT_SCALE. Long mode: STRUCTD_KILL_MATRIX_KILLS=10000 and
// STRUCTD_KILL_MATRIX_DAEMON_KILLS=100 run rounds until that many clients
// (or daemons) were killed.

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "structd/client/admin.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "testing/client_types.h"
#include "testing/daemon_process.h"
#include "testing/shm_fixture.h"
#include "testing/spawned_process.h"

namespace structd::testing {
namespace {

// How many kills a test makes: `short_mode` times STRUCTD_FAULT_SCALE, or
// the number in `variable` (long mode).
int KillTarget(const char* variable, int short_mode) {
  const char* v = std::getenv(variable);
  if (v != nullptr && std::atoi(v) > 0) return std::atoi(v);
  return short_mode * FaultScale();
}

// The honest process's work: allocate Counters from the stock, stamp them,
// drop some (recycled in place) and keep the others, in a thread of its
// own, until paused. Calls may fail while the daemon is away (the stock
// runs dry); what it holds must never change.
class HonestChurn {
 public:
  explicit HonestChurn(client::Channel& c) : c_(c), thread_([this] { Run(); }) {}
  ~HonestChurn() {
    stop_.store(true);
    thread_.join();
  }
  // Stops the work (and waits until it has), so the census sees no
  // recycling in progress; Resume lets it go on.
  void Pause() {
    pause_.store(true);
    while (!paused_.load()) std::this_thread::yield();
  }
  void Resume() { pause_.store(false); }
  // Every held Counter still has its stamp. REQUIRES: paused.
  void ExpectIntact(const std::string& when) {
    for (const auto& [owned, stamp] : held_) {
      ASSERT_EQ(owned->hits().load(), stamp) << when << ": an honest instance changed";
    }
    EXPECT_GT(allocated_, 0u) << when << ": the honest process allocated nothing";
  }
  uint64_t allocated() const { return allocated_.load(); }
  uint64_t retained() const { return retained_.load(); }

 private:
  void Run() {
    std::mt19937_64 rng(TestSeed() + 17);
    while (!stop_.load()) {
      if (pause_.load()) {
        paused_.store(true);
        while (pause_.load() && !stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        paused_.store(false);
        continue;
      }
      auto one = c_.Allocate<Counter>();
      if (!one.ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      const uint64_t stamp = (uint64_t{0xC0DE} << 40) | ++allocated_;
      (*one)->hits().store(stamp);
      if (rng() % 4 == 0) {
        if (rng() % 2 == 0) {
          // Held through a reference of its own retained in shared
          // memory; the allocation's is dropped (not recycled: held).
          auto again = c_.Retain<Counter>(one->ref());
          if (again.ok()) {
            one->Reset();
            ++retained_;
            one = std::move(again);
          }
        }
        held_.emplace_back(std::move(*one), stamp);
        if (held_.size() > 256) held_.erase(held_.begin() + static_cast<long>(rng() % 256));
      }  // else dropped here: recycled in place
    }
    paused_.store(true);
  }

  client::Channel& c_;
  std::vector<std::pair<client::Owned<Counter>, uint64_t>> held_;  // the thread's
  std::atomic<uint64_t> allocated_{0};  // read by the test thread too
  std::atomic<uint64_t> retained_{0};
  std::atomic<bool> stop_{false}, pause_{false}, paused_{false};
  std::thread thread_;
};

class KillMatrixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client::ClientOptions o;
    o.socket = daemon_.socket();
    auto connected = client::Client::Connect(o);
    ASSERT_TRUE(connected.ok()) << connected.status();
    me_ = std::move(*connected);
    auto ch = me_->CreateChannel("km");
    ASSERT_TRUE(ch.ok()) << ch.status();
    created_ = std::move(*ch);
    for (int i = 0; i < 4; ++i) {
      auto a = c().Allocate<Anchor>();
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(c().SetRoot("a" + std::to_string(i), a->ref()).ok());
      anchors_.push_back(std::move(*a));
    }
    ASSERT_TRUE(c().Use<Node>().ok());
    // The chaos clients' second sessions send, receive and release Nodes
    // through it (issue 18: senders and receivers killed anywhere, the
    // daemon killed under message load).
    ASSERT_TRUE(c().CreatePort("q", 64).ok());
    client::AdminOptions ao;
    ao.socket = daemon_.socket();
    auto admin = client::AdminClient::Connect(ao);
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_ = std::move(*admin);
  }
  client::Channel& c() { return *created_.channel; }

  std::unique_ptr<SpawnedProcess> Chaos(uint64_t seed) {
    return std::make_unique<SpawnedProcess>(std::vector<std::string>{
        STRUCTD_TEST_CLIENT, "chaos", daemon_.socket(), "km", created_.member_capability,
        std::to_string(seed)});
  }

  // Waits until only this test's own session is left.
  void AwaitOnlyMe() {
    for (int i = 0; i < 1000; ++i) {
      auto sessions = admin_->Sessions();
      if (sessions.ok() && sessions->size() == 1) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "killed clients' sessions did not end";
  }

  // The consistency check, plus: every mutex can be taken, every string read.
  void ExpectConsistent(const std::string& when) {
    auto check = admin_->Check("km");
    ASSERT_TRUE(check.ok()) << check.status();
    EXPECT_TRUE(check->ok) << when << ": " << check->problems.size() << " problem(s), first: "
                           << (check->problems.empty() ? "" : check->problems[0].ref.ToString() +
                                                                  ": " + check->problems[0].what);
    for (auto& a : anchors_) {
      auto guard = a->lock().Lock();
      EXPECT_TRUE(guard.ok()) << when << ": " << guard.status();
      auto text = a->text().Read();
      EXPECT_TRUE(text.ok()) << when << ": " << text.status();
    }
  }

  DaemonProcess daemon_;
  std::unique_ptr<client::Client> me_;
  client::CreatedChannel created_;
  std::vector<client::Owned<Anchor>> anchors_;
  std::unique_ptr<client::AdminClient> admin_;
};

TEST_F(KillMatrixTest, ClientsKilledAtRandomPointsLeaveAConsistentArena) {
  std::mt19937_64 rng(TestSeed());
  const int target = KillTarget("STRUCTD_KILL_MATRIX_KILLS", 36);
  constexpr int kWorkers = 3;
  uint64_t killed_while_ready = 0, killed_early = 0;
  HonestChurn honest(c());
  int round = 0;
  for (; static_cast<int>(killed_while_ready + killed_early) < target; ++round) {
    std::vector<std::unique_ptr<SpawnedProcess>> workers;
    for (int w = 0; w < kWorkers; ++w) workers.push_back(Chaos(rng()));
    // Some are killed before they are ready (mid-connect, mid-attach,
    // mid-join); the others work a random while (hundreds to thousands of
    // operations), then die.
    std::vector<bool> early(workers.size());
    for (size_t w = 0; w < workers.size(); ++w) {
      early[w] = rng() % 4 == 0;
      if (early[w]) {
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
        workers[w]->Kill(SIGKILL);
        ++killed_early;
      }
    }
    for (size_t w = 0; w < workers.size(); ++w) {
      if (early[w]) continue;
      ASSERT_EQ(workers[w]->ReadLine(std::chrono::seconds(20)), "ready");
    }
    for (size_t w = 0; w < workers.size(); ++w) {
      if (early[w]) continue;
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 60));
      workers[w]->Kill(SIGKILL);
      ++killed_while_ready;
    }
    for (auto& w : workers) w->Wait();
    AwaitOnlyMe();
    honest.Pause();
    ExpectConsistent("round " + std::to_string(round));
    honest.ExpectIntact("round " + std::to_string(round));
    honest.Resume();
    if (HasFailure()) break;
    if (round % 100 == 99) {
      std::printf("%d rounds, %llu kills so far\n", round + 1,
                  static_cast<unsigned long long>(killed_while_ready + killed_early));
      std::fflush(stdout);
    }
  }
  uint64_t hits = 0;
  for (auto& a : anchors_) hits += a->hits().load();
  EXPECT_GT(hits, 0u) << "the workers did no locked updates: the test tested nothing";
  auto ports = admin_->Ports("km");
  ASSERT_TRUE(ports.ok() && ports->size() == 1) << ports.status();
  EXPECT_GT(ports->front().sent, 0u) << "no message went through the port: untested";
  std::printf("%llu messages sent through the port, %llu received\n",
              static_cast<unsigned long long>(ports->front().sent),
              static_cast<unsigned long long>(ports->front().received));
  std::printf("%d rounds, %llu kills of working clients, %llu early kills, %llu locked updates, "
              "%llu honest allocations, %llu honest retains\n",
              round, static_cast<unsigned long long>(killed_while_ready),
              static_cast<unsigned long long>(killed_early),
              static_cast<unsigned long long>(hits),
              static_cast<unsigned long long>(honest.allocated()),
              static_cast<unsigned long long>(honest.retained()));
  EXPECT_GT(honest.retained(), 0u) << "the honest process retained nothing: untested";
}

TEST_F(KillMatrixTest, TheDaemonKilledUnderLoadRecoversAConsistentArena) {
  std::mt19937_64 rng(TestSeed());
  const int kRounds = KillTarget("STRUCTD_KILL_MATRIX_DAEMON_KILLS", 3);
  HonestChurn honest(c());  // allocates and recycles through the outages too
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::unique_ptr<SpawnedProcess>> workers;
    for (int w = 0; w < 3; ++w) workers.push_back(Chaos(rng()));
    for (auto& w : workers) ASSERT_EQ(w->ReadLine(std::chrono::seconds(20)), "ready");
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 150));
    daemon_.Kill9();
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 50));
    daemon_.Start();
    // The workers re-attach and go on; then they die too.
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 150));
    for (auto& w : workers) w->Kill(SIGKILL);
    for (auto& w : workers) w->Wait();
    // Our own client resumes its session; then only it is left.
    for (int i = 0; i < 500 && !me_->attached(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(me_->attached());
    client::AdminOptions ao;
    ao.socket = daemon_.socket();
    admin_ = std::move(*client::AdminClient::Connect(ao));
    AwaitOnlyMe();
    honest.Pause();
    ExpectConsistent("after daemon restart " + std::to_string(round));
    honest.ExpectIntact("after daemon restart " + std::to_string(round));
    honest.Resume();
    if (HasFailure()) break;
  }
  std::printf("%d daemon kills, %llu honest allocations, %llu honest retains\n", kRounds,
              static_cast<unsigned long long>(honest.allocated()),
              static_cast<unsigned long long>(honest.retained()));
}

}  // namespace
}  // namespace structd::testing
