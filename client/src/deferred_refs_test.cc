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

std::function<size_t()> PerCall(size_t n = 100000) {
  return [n] { return n; };
}

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
  DeferredRefs q(d.Retain(), d.Release(), PerCall(), /*background=*/false);
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
  DeferredRefs q(d.Retain(), d.Release(), PerCall(), false);
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
  DeferredRefs q(d.Retain(), d.Release(), PerCall(), false);
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
  }, PerCall(), false);
  q2.Retain(R(5));
  q2.Release(R(5));
  EXPECT_EQ(q2.Flush().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(q2.pending(), 1u) << "the applied retain is not queued again";
  EXPECT_EQ(d.count(R(5)), 1);
}

TEST(DeferredRefsTest, ALostSessionDropsTheQueueAndOneBadRefDoesNotSinkABatch) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), PerCall(), false);
  q.Release(R(6));
  d.FailNext(1, absl::FailedPreconditionError("session lost"));
  EXPECT_TRUE(q.Flush().ok()) << "refused: dropped, nothing left to retry";
  EXPECT_EQ(q.pending(), 0u);
  // One ref the daemon refuses: the others in its batch still count.
  d.Refuse(R(7));
  q.Release(R(7));
  q.Release(R(8));
  q.Release(R(9));
  EXPECT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.count(R(8)), -1);
  EXPECT_EQ(d.count(R(9)), -1);
  EXPECT_EQ(d.count(R(7)), 0);
}

// A refusal that is not the session's end (a member spoiled a refcount:
// RESOURCE_EXHAUSTED) must not hold every later release back.
TEST(DeferredRefsTest, APermanentRefusalOfARetainDoesNotStopTheReleases) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), PerCall(), false);
  q.Retain(R(20));
  q.Release(R(21));
  d.FailNext(1, absl::ResourceExhaustedError("refcount at its maximum"));
  EXPECT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.count(R(21)), -1);
  EXPECT_EQ(q.pending(), 0u);
}

// A call whose reply was lost may have been applied: a retain is sent
// again (one count too many at worst), a release is not (never freed
// twice).
TEST(DeferredRefsTest, AnUnknownOutcomeRetriesRetainsButNeverReleases) {
  FakeDaemon d;
  int retain_calls = 0, release_calls = 0;
  DeferredRefs q(
      [&](const std::vector<Ref>& refs) {
        if (++retain_calls == 1) {
          (void)d.Retain()(refs);  // applied, then the reply is lost
          return absl::AbortedError("outcome unknown");
        }
        return d.Retain()(refs);
      },
      [&](const std::vector<Ref>& refs) {
        ++release_calls;
        (void)d.Release()(refs);
        return absl::AbortedError("outcome unknown");
      },
      PerCall(), false);
  q.Retain(R(30));
  q.Release(R(31));
  EXPECT_EQ(q.Flush().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(q.pending(), 2u) << "the retain is kept, and the release waits for it";
  EXPECT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.count(R(30)), 2) << "applied twice: one count too many, never too few";
  EXPECT_EQ(d.count(R(31)), -1) << "applied once";
  EXPECT_EQ(release_calls, 1);
}

// Above one call's worth, a failure of a later call keeps only what that
// call and the ones after it carried: nothing is applied twice.
TEST(DeferredRefsTest, AFailureAfterSomeCallsKeepsOnlyWhatWasNotApplied) {
  FakeDaemon d;
  int calls = 0;
  DeferredRefs q(d.Retain(),
                 [&](const std::vector<Ref>& refs) {
                   if (++calls == 2) return absl::UnavailableError("restarting");
                   return d.Release()(refs);
                 },
                 PerCall(2), false);
  for (uint32_t i = 40; i < 45; ++i) q.Release(R(i));
  EXPECT_EQ(q.Flush().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(q.pending(), 3u);
  EXPECT_TRUE(q.Flush().ok());
  for (uint32_t i = 40; i < 45; ++i) EXPECT_EQ(d.count(R(i)), -1) << i;
}

TEST(DeferredRefsTest, TheBackgroundThreadAppliesWithoutAFlushAndTheDestructorFlushes) {
  FakeDaemon d;
  {
    DeferredRefs q(d.Retain(), d.Release(), PerCall());
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
    DeferredRefs q(d.Retain(), d.Release(), PerCall());
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

// Each round: a clone of ref base+i (O2 = O1.Clone()) is handed to a
// receiving thread that drops it, and O1 is dropped, while a flush runs
// all the time. `fresh_thread`: each clone on a thread that never pushed
// before. Returns the retains that reached a ref already at zero.
int HandOffsUnderFlushes(uint32_t base, uint32_t rounds, bool fresh_thread) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), PerCall(), false);
  for (uint32_t i = 0; i < rounds; ++i) d.Set(R(base + i), 1);  // O1 of each
  std::atomic<uint32_t> handed{0};
  std::atomic<bool> done{false};
  std::thread flusher([&] {
    while (!done.load()) (void)q.Flush();
  });
  std::thread receiver([&] {
    for (uint32_t i = 0; i < rounds; ++i) {
      while (handed.load(std::memory_order_acquire) <= i) {
      }
      q.Release(R(base + i));  // drops O2
    }
  });
  auto round = [&](uint32_t i) {
    q.Retain(R(base + i));  // O2 = O1.Clone()
    handed.store(i + 1, std::memory_order_release);
    q.Release(R(base + i));  // drops O1
  };
  for (uint32_t i = 0; i < rounds; ++i) {
    if (fresh_thread) {
      std::thread([&, i] { round(i); }).join();
    } else {
      round(i);
    }
  }
  receiver.join();
  done = true;
  flusher.join();
  EXPECT_TRUE(q.Flush().ok());
  for (uint32_t i = 0; i < rounds; i += 97) EXPECT_EQ(d.count(R(base + i)), 0);
  return d.retained_after_free();
}

// A clone made on one thread and dropped on another: the release (other
// thread) is never applied without the retain that preceded it.
TEST(DeferredRefsTest, ACloneHandedToAnotherThreadIsNeverFreedUnderIt) {
  EXPECT_EQ(HandOffsUnderFlushes(100, 20000, false), 0);
}

// The same with a new thread for every clone: its first push registers its
// buffer, maybe after a flush took its list of buffers (the flush reads
// the list again before it takes the retains).
TEST(DeferredRefsTest, ACloneFromAThreadThatNeverPushedBeforeIsNotMissed) {
  EXPECT_EQ(HandOffsUnderFlushes(50000, 1500, true), 0);
}

// An Owned that is itself thread_local may be destroyed after the queue's
// own thread_locals: its release still counts (and touches nothing freed).
TEST(DeferredRefsTest, AReleaseDuringThreadExitIsNotLost) {
  FakeDaemon d;
  DeferredRefs q(d.Retain(), d.Release(), PerCall(), false);
  struct DropsOnExit {
    DeferredRefs* q;
    ~DropsOnExit() { q->Release(R(60)); }
  };
  std::thread t([&] {
    thread_local DropsOnExit dropper{&q};  // constructed before the queue's
    q.Retain(R(61));
  });
  t.join();
  ASSERT_TRUE(q.Flush().ok());
  EXPECT_EQ(d.count(R(60)), -1);
  EXPECT_EQ(d.count(R(61)), 1);
}

}  // namespace
}  // namespace structd::client::internal
