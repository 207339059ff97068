// The kill matrix: client processes doing random work (allocate, retain,
// release, store refs, lock mutexes, write strings, set roots; see the
// "chaos" mode of structd_test_client) are killed with SIGKILL at random
// moments, attach included, round after round. After each round the
// consistency check (the one `structctl check` runs) must find nothing:
// no leaked instance, no premature free, refcounts equal to the references
// that exist; and no mutex is stuck, no string is torn. Then the same with
// the daemon killed under load and restarted. Seeds: STRUCTD_TEST_SEED.

#include <signal.h>

#include <chrono>
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
  const int kRounds = 12 * FaultScale();
  constexpr int kWorkers = 3;
  uint64_t killed_while_ready = 0, killed_early = 0;
  for (int round = 0; round < kRounds; ++round) {
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
    ExpectConsistent("round " + std::to_string(round));
    if (HasFailure()) break;
  }
  uint64_t hits = 0;
  for (auto& a : anchors_) hits += a->hits().load();
  EXPECT_GT(hits, 0u) << "the workers did no locked updates: the test tested nothing";
  std::printf("%d rounds, %llu kills of working clients, %llu early kills, %llu locked updates\n",
              kRounds,
              static_cast<unsigned long long>(killed_while_ready),
              static_cast<unsigned long long>(killed_early),
              static_cast<unsigned long long>(hits));
}

TEST_F(KillMatrixTest, TheDaemonKilledUnderLoadRecoversAConsistentArena) {
  std::mt19937_64 rng(TestSeed());
  const int kRounds = 3 * FaultScale();
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
    ExpectConsistent("after daemon restart " + std::to_string(round));
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace structd::testing
