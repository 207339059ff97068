#include "client/src/deferred_refs.h"

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "structd/base/mutex.h"

namespace structd::client::internal {
namespace {

using shm::Ref;

Ref R(uint32_t i) { return Ref::Make(0, 4096 + 16 * i, 1); }

// A daemon's view of one session's counts, with the calls it got.
class FakeDaemon {
 public:
  DeferredRefs::Apply Retain() {
    return [this](const std::vector<Ref>& refs) { return Call(refs, +1); };
  }
  DeferredRefs::Apply Release() {
    return [this](const std::vector<Ref>& refs) { return Call(refs, -1); };
  }
  // The next `n` calls fail with `s` (applying nothing).
  void FailNext(int n, absl::Status s) {
    base::MutexLock lock(&mu_);
    fail_ = n;
    failure_ = s;
  }
  // Refs whose release is refused as not owned (all or none per call).
  void Refuse(Ref r) {
    base::MutexLock lock(&mu_);
    refused_.insert({r.bits(), true});
  }
  int64_t count(Ref r) {
    base::MutexLock lock(&mu_);
    return counts_[r.bits()];
  }
  void Set(Ref r, int64_t n) {
    base::MutexLock lock(&mu_);
    counts_[r.bits()] = n;
  }
  int calls() {
    base::MutexLock lock(&mu_);
    return calls_;
  }
  int64_t lowest_seen() {
    base::MutexLock lock(&mu_);
    return lowest_;
  }
  // Retains that reached a ref after its count had hit zero (it would
  // have been freed under a live Owned).
  int retained_after_free() {
    base::MutexLock lock(&mu_);
    return retained_after_free_;
  }

 private:
  absl::Status Call(const std::vector<Ref>& refs, int delta) {
    base::MutexLock lock(&mu_);
    ++calls_;
    if (fail_ > 0) {
      --fail_;
      return failure_;
    }
    for (Ref r : refs) {
      if (delta < 0 && refused_.count(r.bits())) {
        return absl::FailedPreconditionError("not owned");
      }
    }
    for (Ref r : refs) {
      if (delta > 0 && freed_.count(r.bits())) ++retained_after_free_;
      counts_[r.bits()] += delta;
      lowest_ = std::min(lowest_, counts_[r.bits()]);
      if (counts_[r.bits()] == 0) freed_.insert({r.bits(), true});
    }
    return absl::OkStatus();
  }

  base::Mutex mu_;
  std::map<uint64_t, int64_t> counts_;
  std::map<uint64_t, bool> refused_;
  std::map<uint64_t, bool> freed_;
  int retained_after_free_ = 0;
  int calls_ = 0;
  int fail_ = 0;
  absl::Status failure_;
  int64_t lowest_ = INT64_MAX;
};

TEST(DeferredRefsTest, NothingReachesTheDaemonUntilAFlush) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), /*background=*/false);
  d.Set(R(1), 1);
  for (int i = 0; i < 1000; ++i) q.Retain(R(1));
  for (int i = 0; i < 1000; ++i) q.Release(R(1));
  EXPECT_EQ(d.calls(), 0);
  EXPECT_EQ(q.pending(), 2000u);
  ASSERT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.calls(), 2);  // one retain call, one release call
  EXPECT_EQ(d.count(R(1)), 1);
  EXPECT_EQ(q.pending(), 0u);
}

// Two Owneds O1 and O2 of one ref (count 2): drop O1, clone O2 into O3,
// drop O2. Applied releases first, the count would reach zero (the
// instance freed under O3); retains first, it never goes below one.
TEST(DeferredRefsTest, RetainsAreAppliedBeforeReleasesSoACountNeverDipsToZero) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), false);
  d.Set(R(2), 2);
  q.Release(R(2));  // O1 dropped
  q.Retain(R(2));   // O3 = O2.Clone()
  q.Release(R(2));  // O2 dropped
  ASSERT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.count(R(2)), 1);
  EXPECT_GE(d.lowest_seen(), 1);
}

TEST(DeferredRefsTest, AnUnavailableDaemonKeepsTheQueueForARetry) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), false);
  d.Set(R(3), 1);
  q.Retain(R(3));
  q.Release(R(4));
  d.FailNext(1, absl::UnavailableError("restarting"));
  EXPECT_EQ(q.Flush().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(q.pending(), 2u);
  ASSERT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.count(R(3)), 2);
  EXPECT_EQ(d.count(R(4)), -1);
  // Releases failing after the retains went through: only they are kept.
  DeferredRefs q2(d.Retain(), [&](const std::vector<Ref>&) {
    return absl::UnavailableError("restarting");
  }, false);
  q2.Retain(R(5));
  q2.Release(R(5));
  EXPECT_EQ(q2.Flush().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(q2.pending(), 1u) << "the applied retain is not queued again";
  EXPECT_EQ(d.count(R(5)), 1);
}

TEST(DeferredRefsTest, ALostSessionDropsTheQueueAndOneBadRefDoesNotSinkABatch) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), false);
  q.Release(R(6));
  d.FailNext(1, absl::FailedPreconditionError("session lost"));
  // All or none refused; then one by one: the lost session fails each too.
  d.FailNext(2, absl::FailedPreconditionError("session lost"));
  EXPECT_EQ(q.Flush().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(q.pending(), 0u);
  // One ref the daemon refuses: the others in its batch still count.
  d.Refuse(R(7));
  q.Release(R(7));
  q.Release(R(8));
  q.Release(R(9));
  EXPECT_EQ(q.Flush().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(d.count(R(8)), -1);
  EXPECT_EQ(d.count(R(9)), -1);
  EXPECT_EQ(d.count(R(7)), 0);
}

TEST(DeferredRefsTest, TheBackgroundThreadAppliesWithoutAFlushAndTheDestructorFlushes) {
  FakeDaemon d;
  {
    DeferredRefs q(d.Retain(), d.Release());
    q.Retain(R(10));
    for (int i = 0; i < 2000 && d.count(R(10)) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(d.count(R(10)), 1) << "never applied in the background";
    q.Release(R(11));
  }
  EXPECT_EQ(d.count(R(11)), -1) << "the destructor applies what is left";
}

TEST(DeferredRefsTest, ManyThreadsLoseNothing) {
  FakeDaemon d;
  {
    DeferredRefs q(d.Retain(), d.Release());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&q, t] {
        for (int i = 0; i < 20000; ++i) {
          q.Retain(R(static_cast<uint32_t>(t)));
          if (i % 2 == 0) q.Release(R(static_cast<uint32_t>(t)));
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  for (uint32_t t = 0; t < 4; ++t) EXPECT_EQ(d.count(R(t)), 10000);
}

// A clone made on one thread and dropped on another, while a flush runs
// all the time: the release (other thread) is never applied without the
// retain that preceded it.
TEST(DeferredRefsTest, ACloneHandedToAnotherThreadIsNeverFreedUnderIt) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), false);
  constexpr uint32_t kRounds = 20000;
  for (uint32_t i = 0; i < kRounds; ++i) d.Set(R(100 + i), 1);  // O1 of each
  std::atomic<uint32_t> handed{0};
  std::atomic<bool> done{false};
  std::thread flusher([&] {
    while (!done.load()) (void)q.Flush();
  });
  std::thread receiver([&] {
    for (uint32_t i = 0; i < kRounds; ++i) {
      while (handed.load(std::memory_order_acquire) <= i) {
      }
      q.Release(R(100 + i));  // drops O2
    }
  });
  for (uint32_t i = 0; i < kRounds; ++i) {
    q.Retain(R(100 + i));  // O2 = O1.Clone()
    handed.store(i + 1, std::memory_order_release);
    q.Release(R(100 + i));  // drops O1
  }
  receiver.join();
  done = true;
  flusher.join();
  ASSERT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.retained_after_free(), 0);
  for (uint32_t i = 0; i < kRounds; i += 997) EXPECT_EQ(d.count(R(100 + i)), 0);
}

}  // namespace
}  // namespace structd::client::internal
