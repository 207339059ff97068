#include "structd/shm/sync.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <new>
#include <thread>

#include "structd/shm/allocator.h"
#include "structd/shm/field.h"
#include "testing/temp_dir.h"

namespace structd::shm {
namespace {

using namespace std::chrono_literals;

class SyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ArenaOptions o;
    o.extent_size = 256 * 1024;
    arena_ = std::move(*Arena::Create(dir_.Sub("arena"), o));
    alloc_ = std::move(*Allocator::Adopt(arena_.get()));
    layout_ = *Layout::Compute({FieldSpec::Mutex("mu"),
                                FieldSpec::Condition("cv"),
                                FieldSpec::Scalar("n", FieldKind::kU32)});
    inst_ = *arena_->Resolve(*alloc_->Allocate(1, layout_));
  }
  MutexField Mu() {
    return MutexField(
        FieldHandle::Bind(layout_, "mu", FieldKind::kMutex)->address(inst_));
  }
  ConditionField Cv() {
    return ConditionField(FieldHandle::Bind(layout_, "cv", FieldKind::kCondition)
                              ->address(inst_));
  }
  Scalar<uint32_t> N() {
    return FieldHandle::BindScalar<uint32_t>(layout_, "n")->scalar<uint32_t>(
        inst_);
  }

  structd::testing::TempDir dir_;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Allocator> alloc_;
  Layout layout_;
  InstancePtr inst_;
};

TEST_F(SyncTest, LockRecordsTheOwnerAndGuardUnlocks) {
  MutexField mu = Mu();
  EXPECT_EQ(mu.owner_pid(), 0u);
  {
    auto g = mu.Lock();
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_TRUE(g->owns_lock());
    EXPECT_EQ(mu.owner_pid(), uint32_t(getpid()));
  }
  EXPECT_EQ(mu.owner_pid(), 0u);
  EXPECT_TRUE(mu.TryLock().ok());
}

TEST_F(SyncTest, RelockingFromTheSameThreadIsAnError) {
  MutexField mu = Mu();
  auto g = mu.Lock();
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(mu.Lock().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SyncTest, TryLockAndLockForFailWhileAnotherThreadHoldsIt) {
  MutexField mu = Mu();
  auto g = mu.Lock();
  ASSERT_TRUE(g.ok());
  std::thread t([&] {
    EXPECT_EQ(mu.TryLock().status().code(), absl::StatusCode::kUnavailable);
    auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(mu.LockFor(30ms).status().code(),
              absl::StatusCode::kDeadlineExceeded);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 25ms);
  });
  t.join();
  g->Unlock();
  std::thread t2([&] { EXPECT_TRUE(mu.LockFor(1s).ok()); });
  t2.join();
}

TEST_F(SyncTest, GuardIsMoveOnly) {
  static_assert(!std::is_copy_constructible_v<MutexGuard>);
  static_assert(std::is_move_constructible_v<MutexGuard>);
  MutexField mu = Mu();
  MutexGuard outer;
  {
    auto g = mu.Lock();
    ASSERT_TRUE(g.ok());
    outer = std::move(*g);
    EXPECT_FALSE(g->owns_lock());
  }
  EXPECT_TRUE(outer.owns_lock());  // still locked after g is gone
  outer.Unlock();
  EXPECT_FALSE(outer.owns_lock());
  EXPECT_TRUE(mu.TryLock().ok());
}

TEST_F(SyncTest, ThreadDeathWhileLockedIsReportedAsOwnerDied) {
  MutexField mu = Mu();
  std::thread t([&] {
    auto g = mu.Lock();
    ASSERT_TRUE(g.ok());
    // Exit the thread while holding the lock: move the guard into storage
    // whose destructor never runs (no heap block for LeakSanitizer).
    alignas(MutexGuard) static unsigned char abandoned[sizeof(MutexGuard)];
    new (abandoned) MutexGuard(std::move(*g));
  });
  t.join();
  auto g = mu.Lock();
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->owner_died());
  g->Unlock();
  auto again = mu.Lock();
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->owner_died());  // made consistent: usable again
}

TEST_F(SyncTest, UninitializedMutexIsRefused) {
  std::memset(FieldHandle::Bind(layout_, "mu", FieldKind::kMutex)->address(inst_),
              0, kMutexFieldSize);
  EXPECT_EQ(Mu().Lock().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SyncTest, NotifyWithoutWaitersWakesNobody) {
  EXPECT_EQ(Cv().Notify(1), 0);
  EXPECT_EQ(Cv().NotifyAll(), 0);
}

TEST_F(SyncTest, WaitForTimesOutWhenThePredicateStaysFalse) {
  MutexField mu = Mu();
  auto g = mu.Lock();
  ASSERT_TRUE(g.ok());
  auto r = Cv().WaitFor(*g, 20ms, [&] { return N().load() == 1; });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(*r);
  EXPECT_TRUE(g->owns_lock());  // relocked on return
}

TEST_F(SyncTest, NotifyWakesWaitersAndReportsHowMany) {
  MutexField mu = Mu();
  ConditionField cv = Cv();
  constexpr int kWaiters = 3;
  std::atomic<int> woke{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&] {
      auto g = mu.Lock();
      ASSERT_TRUE(g.ok());
      auto r = cv.WaitFor(*g, 10s, [&] { return N().load() > 0; });
      ASSERT_TRUE(r.ok());
      EXPECT_TRUE(*r);
      woke.fetch_add(1);
    });
  }
  // Wait until all three sleep in the kernel: the waiter hint says so.
  auto* waiters = reinterpret_cast<std::atomic<uint32_t>*>(
      static_cast<uint8_t*>(
          FieldHandle::Bind(layout_, "cv", FieldKind::kCondition)
              ->address(inst_)) +
      4);
  while (waiters->load() < kWaiters) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);
  {
    auto g = mu.Lock();
    ASSERT_TRUE(g.ok());
    N().store(1);
  }
  int first = cv.Notify(1);
  EXPECT_EQ(first, 1);
  int rest = 0;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (woke.load() < kWaiters && std::chrono::steady_clock::now() < deadline) {
    rest += cv.NotifyAll();
    std::this_thread::sleep_for(1ms);
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(woke.load(), kWaiters);
  EXPECT_EQ(first + rest, kWaiters);
}

TEST_F(SyncTest, WaitNeedsALockedGuard) {
  MutexGuard none;
  EXPECT_EQ(Cv().Wait(none).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace structd::shm
