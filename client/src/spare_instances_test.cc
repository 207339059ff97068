// SpareInstances against a fake daemon: what is allocated, handed out and
// given back, counted exactly.
#include "client/src/spare_instances.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <array>
#include <deque>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "structd/base/mutex.h"

namespace structd::client::internal {
namespace {

using std::chrono::milliseconds;

const shm::TypeToken kTokenA = *shm::TypeToken::FromHex("0123456789abcdef0123456789abcdef");
const shm::TypeToken kTokenB = *shm::TypeToken::FromHex("fedcba9876543210fedcba9876543210");

// A stocked type whose blocks are `block_bytes` long (header included).
SpareInstances::Type TypeOf(shm::TypeToken token, uint32_t block_bytes = 64) {
  return {token, token == kTokenA ? 1u : 2u, block_bytes - shm::kInstanceHeaderSize, true, 1};
}

// Hands out distinct refs, remembers every call, and can be limited to a
// number of instances alive at once (RESOURCE_EXHAUSTED past it) or told
// to block.
class FakeDaemon {
 public:
  absl::StatusOr<std::vector<shm::InstancePtr>> Allocate(shm::TypeToken token, uint32_t count) {
    base::MutexLock lock(&mu_);
    calls_.push_back(count);
    while (blocked_) unblocked_.Wait(&mu_);
    if (alive_ + count > capacity_) {
      return absl::ResourceExhaustedError("the channel is full (fake)");
    }
    std::vector<shm::InstancePtr> out;
    for (uint32_t i = 0; i < count; ++i) {
      shm::Ref ref = shm::Ref::Make(0, 16 * static_cast<uint32_t>(next_++), 1);
      // A block of its own with a live header, as the daemon publishes it.
      blocks_.emplace_back();
      auto* h = reinterpret_cast<shm::InstanceHeader*>(blocks_.back().data());
      h->type_index.store(token == kTokenA ? 1 : 2);
      h->generation.store(1);
      h->refcount.store(1);
      out.emplace_back(blocks_.back().data(), ref, 64);
      alive_++;
      type_of_[ref.bits()] = token;
    }
    return out;
  }
  absl::Status Release(const std::vector<shm::Ref>& refs) {
    base::MutexLock lock(&mu_);
    for (shm::Ref r : refs) {
      EXPECT_TRUE(type_of_.count(r.bits())) << "released a ref never allocated";
      EXPECT_TRUE(released_.insert(r.bits()).second) << "released twice: " << r.ToString();
      alive_--;
    }
    return absl::OkStatus();
  }
  SpareInstances::AllocateFn allocate() {
    return [this](shm::TypeToken t,
                  uint32_t n) -> absl::StatusOr<std::vector<SpareInstances::Spare>> {
      absl::StatusOr<std::vector<shm::InstancePtr>> made = Allocate(t, n);
      if (!made.ok()) return made.status();
      return std::vector<SpareInstances::Spare>(made->begin(), made->end());
    };
  }
  SpareInstances::ReleaseFn release() {
    return [this](const std::vector<shm::Ref>& refs) { return Release(refs); };
  }
  std::vector<uint32_t> calls() {
    base::MutexLock lock(&mu_);
    return calls_;
  }
  // The header of the i-th instance allocated.
  shm::InstanceHeader& header(size_t i) {
    base::MutexLock lock(&mu_);
    return *reinterpret_cast<shm::InstanceHeader*>(blocks_.at(i).data());
  }
  uint64_t alive() {
    base::MutexLock lock(&mu_);
    return alive_;
  }
  size_t released() {
    base::MutexLock lock(&mu_);
    return released_.size();
  }
  bool was_released(shm::Ref r) {
    base::MutexLock lock(&mu_);
    return released_.count(r.bits()) != 0;
  }
  void set_capacity(uint64_t c) {
    base::MutexLock lock(&mu_);
    capacity_ = c;
  }
  void set_blocked(bool b) {
    base::MutexLock lock(&mu_);
    blocked_ = b;
    unblocked_.SignalAll();
  }

 private:
  base::Mutex mu_;
  base::CondVar unblocked_;
  std::deque<std::array<uint8_t, 64>> blocks_;  // stable addresses
  uint64_t next_ = 1;
  uint64_t alive_ = 0;
  uint64_t capacity_ = ~uint64_t{0};
  bool blocked_ = false;
  std::vector<uint32_t> calls_;
  std::map<uint64_t, shm::TypeToken> type_of_;
  std::set<uint64_t> released_;
};

// Waits up to 10 s for `done`.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 1000 && !done(); ++i) std::this_thread::sleep_for(milliseconds(10));
  return done();
}

// Stocks 16, takes 9 (below half), and leaves the background refill of 9
// waiting in the daemon.
void StartABlockedRefill(SpareInstances& spares, FakeDaemon& daemon) {
  std::vector<shm::InstancePtr> out;
  ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
  daemon.set_blocked(true);
  shm::InstancePtr p;
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(spares.TryTakeOne(0, &p));
  ASSERT_TRUE(Eventually([&] { return daemon.calls().size() == 2; }));
}

TEST(SpareInstancesTest, AMissAllocatesOneStockAndLaterTakesMakeNoCall) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release(), /*background=*/false);
  shm::InstancePtr p;
  EXPECT_FALSE(spares.TryTakeOne(0, &p)) << "nothing is set up yet";
  std::vector<shm::InstancePtr> out;
  ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(daemon.calls(), (std::vector<uint32_t>{1 + SpareInstances::kFirstTarget}));
  std::set<uint64_t> seen = {out[0].ref().bits()};
  for (uint32_t i = 0; i < SpareInstances::kFirstTarget; ++i) {
    ASSERT_TRUE(spares.TryTakeOne(0, &p)) << i;
    EXPECT_TRUE(seen.insert(p.ref().bits()).second) << "handed out twice";
  }
  EXPECT_FALSE(spares.TryTakeOne(0, &p));
  EXPECT_EQ(daemon.calls().size(), 1u) << "takes from the stock call nobody";
  EXPECT_EQ(spares.size(), 0u);
}

TEST(SpareInstancesTest, TheTargetDoublesOnEachMissUpToTheCaps) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release(), /*background=*/false);
  std::vector<shm::InstancePtr> out;
  shm::InstancePtr p;
  for (int round = 0; round < 12; ++round) {
    ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
    while (spares.TryTakeOne(0, &p)) {
    }
  }
  std::vector<uint32_t> calls = daemon.calls();
  ASSERT_EQ(calls.size(), 12u);
  EXPECT_EQ(calls[0], 1 + 16u);
  EXPECT_EQ(calls[1], 1 + 32u);
  EXPECT_EQ(calls[2], 1 + 64u);
  // 256 KiB of 64-byte blocks is 4,096: the instance cap binds first.
  EXPECT_EQ(calls.back(), 1 + SpareInstances::kMaxTarget);
  // Big blocks: at most 256 KiB of them.
  ASSERT_TRUE(spares.Take(1, TypeOf(kTokenB, 64 << 10), 1, out).ok());
  EXPECT_EQ(daemon.calls().back(), 1 + 4u) << "4 blocks of 64 KiB";
  // A batch bigger than a stock is allocated alone.
  ASSERT_TRUE(spares.Take(2, TypeOf(kTokenA), 100000, out).ok());
  EXPECT_EQ(daemon.calls().back(), 100000u);
}

TEST(SpareInstancesTest, AFullChannelGetsEverySpareBackBeforeTheAllocationFails) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release(), /*background=*/false);
  std::vector<shm::InstancePtr> a;
  ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, a).ok());  // 1 + 16 spares of A
  ASSERT_EQ(spares.size(), 16u);
  daemon.set_capacity(17 + 10);
  // B needs 10 (+16 for its stock): only fits once A's spares are back.
  std::vector<shm::InstancePtr> b;
  ASSERT_TRUE(spares.Take(1, TypeOf(kTokenB), 10, b).ok());
  EXPECT_EQ(b.size(), 10u);
  EXPECT_EQ(daemon.released(), 16u) << "A's spares were given back";
  EXPECT_EQ(spares.size(), 0u) << "and no new stock was taken";
  EXPECT_EQ(daemon.alive(), 11u) << "1 of A and 10 of B";
  // When even that is not enough, the error comes through.
  std::vector<shm::InstancePtr> c;
  absl::Status s = spares.Take(1, TypeOf(kTokenB), 1000, c);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_TRUE(c.empty());
}

TEST(SpareInstancesTest, ForgetDropsSparesWithoutGivingThemBack) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release(), /*background=*/false);
  std::vector<shm::InstancePtr> out;
  ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
  spares.Forget();
  shm::InstancePtr p;
  EXPECT_FALSE(spares.TryTakeOne(0, &p));
  EXPECT_EQ(spares.size(), 0u);
  EXPECT_EQ(daemon.released(), 0u) << "their arena is gone: nothing to release";
}

TEST(SpareInstancesTest, DestructionAndATypeChangeGiveSparesBack) {
  FakeDaemon daemon;
  {
    SpareInstances spares(daemon.allocate(), daemon.release(), /*background=*/false);
    std::vector<shm::InstancePtr> out;
    ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
    // The slot now holds another type (a re-registered struct): A's go back.
    ASSERT_TRUE(spares.Take(0, TypeOf(kTokenB), 1, out).ok());
    EXPECT_EQ(daemon.released(), 16u);
    EXPECT_EQ(spares.size(), 16u);
  }
  EXPECT_EQ(daemon.released(), 32u);
  EXPECT_EQ(daemon.alive(), 2u) << "only the two handed out";
}

TEST(SpareInstancesTest, TheBackgroundThreadRefillsBeforeTheStockRunsOut) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release());
  std::vector<shm::InstancePtr> out;
  ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
  shm::InstancePtr p;
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(spares.TryTakeOne(0, &p));  // 7 left < 16/2
  ASSERT_TRUE(Eventually([&] { return spares.size() == 16; })) << spares.size();
  EXPECT_EQ(daemon.calls(), (std::vector<uint32_t>{17, 9}));
}

// Forget: the arena is gone, and a refill allocated in it may name blocks
// of the next one: neither stocked nor given back.
TEST(SpareInstancesTest, ARefillThatEndsAfterForgetIsDroppedNotStocked) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release());
  StartABlockedRefill(spares, daemon);
  spares.Forget();
  daemon.set_blocked(false);
  ASSERT_TRUE(Eventually([&] { return daemon.alive() == 1 + 16 + 9; })) << daemon.alive();
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(spares.size(), 0u);
  EXPECT_EQ(daemon.released(), 0u);
}

// A spare whose header says it is no longer a spare is never handed out:
// dropped if freed or retyped (not the session's any more), given back if
// only its refcount is off.
TEST(SpareInstancesTest, ASpareThatIsNoLongerLiveIsNeverHandedOut) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release(), /*background=*/false);
  std::vector<shm::InstancePtr> out;
  ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());  // block 0; spares 1..16
  daemon.header(16).generation.store(2);  // freed and reused
  daemon.header(15).refcount.store(0);    // being freed
  daemon.header(14).type_index.store(3);  // another type now
  shm::InstancePtr p;
  ASSERT_TRUE(spares.TryTakeOne(0, &p));
  EXPECT_EQ(p.block(), reinterpret_cast<uint8_t*>(&daemon.header(13)));
  size_t taken = 1;
  while (spares.TryTakeOne(0, &p)) ++taken;
  EXPECT_EQ(taken, 13u);
  // The one whose refcount is off but that is still ours goes back through
  // the daemon (which knows); the freed and retyped ones are dropped.
  EXPECT_EQ(daemon.released(), 1u);
}

// ReleaseSpares means "give it all back now": a refill asked or under way
// before does not stock again behind the caller's back.
TEST(SpareInstancesTest, AfterReleaseAllNothingIsRestockedUntilTheNextTake) {
  FakeDaemon daemon;
  SpareInstances spares(daemon.allocate(), daemon.release());
  StartABlockedRefill(spares, daemon);
  EXPECT_EQ(spares.ReleaseAll(), 7u);
  daemon.set_blocked(false);
  ASSERT_TRUE(Eventually([&] { return daemon.released() == 7 + 9; })) << daemon.released();
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(spares.size(), 0u);
  EXPECT_EQ(daemon.calls().size(), 2u) << "no refill after ReleaseAll";
  std::vector<shm::InstancePtr> out;
  ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
  EXPECT_EQ(spares.size(), SpareInstances::kFirstTarget) << "a take stocks again";
}

TEST(SpareInstancesTest, ManyThreadsNeverGetOneInstanceTwice) {
  FakeDaemon daemon;
  std::vector<uint64_t> handed;
  {
    SpareInstances spares(daemon.allocate(), daemon.release());
    constexpr int kThreads = 4;
    constexpr int kPerThread = 20000;
    std::vector<std::vector<uint64_t>> got(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<shm::InstancePtr> out;
        for (int i = 0; i < kPerThread; ++i) {
          shm::InstancePtr p;
          if (spares.TryTakeOne(0, &p)) {
            got[t].push_back(p.ref().bits());
          } else {
            out.clear();
            ASSERT_TRUE(spares.Take(0, TypeOf(kTokenA), 1, out).ok());
            got[t].push_back(out[0].ref().bits());
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    for (auto& g : got) handed.insert(handed.end(), g.begin(), g.end());
    std::sort(handed.begin(), handed.end());
    EXPECT_EQ(std::adjacent_find(handed.begin(), handed.end()), handed.end())
        << "an instance was handed out twice";
    EXPECT_EQ(handed.size(), size_t{kThreads} * kPerThread);
  }
  // Everything allocated was either handed out or given back.
  EXPECT_EQ(daemon.alive(), handed.size());
  for (uint64_t bits : handed) ASSERT_FALSE(daemon.was_released(shm::Ref::FromBits(bits)));
}

}  // namespace
}  // namespace structd::client::internal
