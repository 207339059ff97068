// Scalar<T>::WaitChanged / Notify: waiting for a field to change.

#include "structd/shm/field_wait.h"

#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "structd/shm/allocator.h"
#include "structd/shm/field.h"
#include "structd/shm/field_watch.h"
#include "testing/temp_dir.h"
#include "testing/thread_state.h"

namespace structd::shm {
namespace {

using namespace std::chrono_literals;

using structd::testing::AwaitAsleep;

pid_t Tid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

class FieldWaitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ArenaOptions o;
    o.extent_size = 256 * 1024;
    arena_ = std::move(*Arena::Create(dir_.Sub("arena"), o));
    alloc_ = std::move(*Allocator::Adopt(arena_.get()));
    layout_ = *Layout::Compute({FieldSpec::Scalar("a", FieldKind::kU32),
                                FieldSpec::Scalar("b", FieldKind::kU32),
                                FieldSpec::Scalar("c", FieldKind::kU64),
                                FieldSpec::Scalar("d", FieldKind::kU64),
                                FieldSpec::Scalar("f", FieldKind::kF64),
                                FieldSpec::Scalar("g", FieldKind::kF32)});
    ref_ = *alloc_->Allocate(1, layout_);
    inst_ = *arena_->Resolve(ref_);
  }
  void TearDown() override { internal::ForceEightByteWaitFallbackForTesting(false); }

  template <typename T>
  Scalar<T> Field(const char* name, const InstancePtr& inst) {
    return FieldHandle::BindScalar<T>(layout_, name)->template scalar<T>(inst);
  }
  template <typename T>
  Scalar<T> Field(const char* name) {
    return Field<T>(name, inst_);
  }

  structd::testing::TempDir dir_;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Allocator> alloc_;
  Layout layout_;
  Ref ref_;
  InstancePtr inst_;
};

TEST_F(FieldWaitTest, AFieldThatAlreadyDiffersReturnsItsValueAtOnce) {
  Field<uint32_t>("a").store(7);
  Field<uint64_t>("c").store(uint64_t{1} << 40);
  Field<double>("f").store(-0.0);
  EXPECT_EQ(*Field<uint32_t>("a").WaitChanged(0), 7u);
  EXPECT_EQ(*Field<uint64_t>("c").WaitChanged(0), uint64_t{1} << 40);
  // Bit for bit: -0.0 is not the 0.0 the caller saw.
  absl::StatusOr<double> f = Field<double>("f").WaitChanged(0.0, 0ms);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(std::signbit(*f));
}

TEST_F(FieldWaitTest, AnUnchangedFieldTimesOutAndSaysWhatToDo) {
  for (int size : {4, 8}) {
    auto start = std::chrono::steady_clock::now();
    absl::Status s = size == 4 ? Field<uint32_t>("a").WaitChanged(0, 30ms).status()
                               : Field<uint64_t>("c").WaitChanged(0, 30ms).status();
    EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms) << size;
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << size;
    EXPECT_NE(s.message().find("Notify"), std::string_view::npos) << s;
  }
  // A timeout of zero (or less) looks once.
  EXPECT_EQ(Field<float>("g").WaitChanged(0.0f, 0ms).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Field<float>("g").WaitChanged(0.0f, -5ms).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(FieldWaitTest, AStoreThenNotifyWakesAWaiterInAnotherThread) {
  for (int size : {4, 8}) {
    std::atomic<pid_t> tid{0};
    uint64_t got = 0;
    std::thread waiter([&] {
      tid = Tid();
      if (size == 4) {
        got = *Field<uint32_t>("a").WaitChanged(0, 10s);
      } else {
        got = *Field<uint64_t>("c").WaitChanged(0, 10s);
      }
    });
    while (tid == 0) std::this_thread::yield();
    ASSERT_TRUE(AwaitAsleep(getpid(), tid));
    int woke = 0;
    if (size == 4) {
      Field<uint32_t>("a").store(42, std::memory_order_release);
      woke = Field<uint32_t>("a").NotifyAll();
    } else {
      Field<uint64_t>("c").store(42, std::memory_order_release);
      woke = Field<uint64_t>("c").NotifyAll();
    }
    waiter.join();
    EXPECT_EQ(woke, 1) << size;
    EXPECT_EQ(got, 42u) << size;
  }
}

TEST_F(FieldWaitTest, ANotifyWithoutAChangeLetsTheWaiterSleepOn) {
  std::atomic<pid_t> tid{0};
  absl::Status result;
  std::thread waiter([&] {
    tid = Tid();
    result = Field<uint64_t>("c").WaitChanged(0, 400ms).status();
  });
  while (tid == 0) std::this_thread::yield();
  ASSERT_TRUE(AwaitAsleep(getpid(), tid));
  EXPECT_EQ(Field<uint64_t>("c").Notify(1), 1);
  waiter.join();
  EXPECT_EQ(result.code(), absl::StatusCode::kDeadlineExceeded);
}

// Notify counts the waiters it woke: of that field only, no more than asked.
TEST_F(FieldWaitTest, NotifySaysHowManyWaitersOfThatFieldItWoke) {
  struct Waiter {
    std::atomic<pid_t> tid{0};
    uint64_t got = 0;
    std::thread thread;
  };
  // Three waiters on a (4 bytes), two on c (8 bytes), one each on b and d.
  const char* fields[] = {"a", "a", "a", "c", "c", "b", "d"};
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (const char* name : fields) {
    auto w = std::make_unique<Waiter>();
    Waiter* raw = w.get();
    bool eight = name[0] == 'c' || name[0] == 'd';
    raw->thread = std::thread([this, raw, name, eight] {
      raw->tid = Tid();
      raw->got = eight ? *Field<uint64_t>(name).WaitChanged(0, 20s)
                       : *Field<uint32_t>(name).WaitChanged(0, 20s);
    });
    waiters.push_back(std::move(w));
  }
  auto all_asleep = [&] {
    for (auto& w : waiters) {
      while (w->tid == 0) std::this_thread::yield();
      if (!AwaitAsleep(getpid(), w->tid)) return false;
    }
    return true;
  };
  ASSERT_TRUE(all_asleep());
  // Unchanged: two of a's waiters wake, look, and sleep again.
  EXPECT_EQ(Field<uint32_t>("a").Notify(2), 2);
  EXPECT_EQ(Field<uint64_t>("c").Notify(1), 1);
  EXPECT_EQ(Field<uint32_t>("a").Notify(0), 0);
  ASSERT_TRUE(all_asleep());
  Field<uint32_t>("a").store(5);
  Field<uint64_t>("c").store(uint64_t{6} << 32);
  EXPECT_EQ(Field<uint32_t>("a").NotifyAll(), 3);
  EXPECT_EQ(Field<uint64_t>("c").Notify(10), 2);
  Field<uint32_t>("b").store(7);
  Field<uint64_t>("d").store(8);
  EXPECT_EQ(Field<uint32_t>("b").Notify(1), 1);
  EXPECT_EQ(Field<uint64_t>("d").Notify(1), 1);
  for (auto& w : waiters) w->thread.join();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(waiters[i]->got, 5u);
  EXPECT_EQ(waiters[3]->got, uint64_t{6} << 32);
  EXPECT_EQ(waiters[4]->got, uint64_t{6} << 32);
  EXPECT_EQ(waiters[5]->got, 7u);
  EXPECT_EQ(waiters[6]->got, 8u);
  EXPECT_EQ(Field<uint32_t>("a").NotifyAll(), 0);  // nobody waits any more
}

// Two processes take turns: each changes a field, notifies, and waits for
// the other's answer, with no sleep anywhere but in WaitChanged. A wake-up
// lost between a waiter's look at the value and its sleep stalls a turn
// until the timeout, and a turn longer than 2 s fails the test. For 8-byte fields only the
// high half changes: a wait that slept on the low half alone (the word the
// kernel compares) would miss those changes.
class FieldWaitPingPongTest : public FieldWaitTest,
                              public ::testing::WithParamInterface<int> {};

template <typename T>
bool PlayTurns(Scalar<T> mine, Scalar<T> theirs, int rounds, bool first, int shift) {
  T seen = 0;
  for (int i = 1; i <= rounds; ++i) {
    const T value = static_cast<T>(i) << shift;
    if (first) {
      mine.store(value, std::memory_order_release);
      mine.Notify(1);
    }
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<T> got = theirs.WaitChanged(seen, 5s);
    // A lost wake-up sleeps until the timeout (and then sees the change).
    if (!got.ok() || *got != value || std::chrono::steady_clock::now() - start > 2s) {
      return false;
    }
    seen = *got;
    if (!first) {
      mine.store(value, std::memory_order_release);
      mine.Notify(1);
    }
  }
  return true;
}

// The end of a two-process game: this side's result `ok` (the child is
// killed if this side failed), and the child's exit status.
void ExpectBothSidesPlayed(pid_t child, bool ok, const char* this_side_failed) {
  int status = 0;
  if (!ok) kill(child, SIGKILL);
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(ok) << this_side_failed;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the other process's turn stalled or saw a wrong value";
}

TEST_P(FieldWaitPingPongTest, NoWakeUpIsLostBetweenTwoProcesses) {
  const int mode = GetParam();  // 4: 4 bytes; 8: 8 bytes; 9: 8 bytes, fallback
  if (mode == 9) internal::ForceEightByteWaitFallbackForTesting(true);
  constexpr int kRounds = 20000;
  auto play = [&](bool first) {
    return mode == 4 ? PlayTurns(Field<uint32_t>(first ? "a" : "b"),
                                 Field<uint32_t>(first ? "b" : "a"), kRounds, first, 0)
                     : PlayTurns(Field<uint64_t>(first ? "c" : "d"),
                                 Field<uint64_t>(first ? "d" : "c"), kRounds, first, 32);
  };
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(play(false) ? 0 : 1);
  const bool ok = play(true);
  ExpectBothSidesPlayed(child, ok, "this process's turn stalled or saw a wrong value");
}

INSTANTIATE_TEST_SUITE_P(Sizes, FieldWaitPingPongTest, ::testing::Values(4, 8, 9),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == 4   ? std::string("FourBytes")
                                  : info.param == 8 ? std::string("EightBytes")
                                                    : std::string("EightBytesWithoutWaitv");
                         });

TEST_F(FieldWaitTest, AWaiterKilledInItsSleepHarmsNobody) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    (void)Field<uint64_t>("c").WaitChanged(0);
    _exit(0);
  }
  ASSERT_TRUE(AwaitAsleep(child, child));
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));

  std::atomic<pid_t> tid{0};
  uint64_t got = 0;
  std::thread waiter([&] {
    tid = Tid();
    got = *Field<uint64_t>("c").WaitChanged(0, 10s);
  });
  while (tid == 0) std::this_thread::yield();
  ASSERT_TRUE(AwaitAsleep(getpid(), tid));
  Field<uint64_t>("c").store(3);
  EXPECT_EQ(Field<uint64_t>("c").NotifyAll(), 1);  // the dead one is not counted
  waiter.join();
  EXPECT_EQ(got, 3u);
  EXPECT_EQ(Field<uint64_t>("d").load(), 0u);  // its neighbour untouched
}

// Members map the arena at addresses of their own: a waiter and a notifier
// meet through the file, not the address (a shared futex, not a private one).
TEST_F(FieldWaitTest, AWaiterAndANotifierMeetThroughDifferentMappings) {
  absl::StatusOr<std::unique_ptr<Arena>> second =
      Arena::Open(dir_.Sub("arena"), Access::kReadWrite);
  ASSERT_TRUE(second.ok()) << second.status();
  absl::StatusOr<InstancePtr> there = (*second)->Resolve(ref_);
  ASSERT_TRUE(there.ok()) << there.status();
  Scalar<uint32_t> here_a = Field<uint32_t>("a");
  Scalar<uint32_t> there_a = Field<uint32_t>("a", *there);
  ASSERT_NE(static_cast<void*>(here_a.address()), static_cast<void*>(there_a.address()));
  std::atomic<pid_t> tid{0};
  uint32_t got = 0;
  std::thread waiter([&] {
    tid = Tid();
    got = *here_a.WaitChanged(0, 10s);
  });
  while (tid == 0) std::this_thread::yield();
  ASSERT_TRUE(AwaitAsleep(getpid(), tid));
  there_a.store(9);
  EXPECT_EQ(there_a.NotifyAll(), 1);
  waiter.join();
  EXPECT_EQ(got, 9u);
}

// A seccomp filter that refuses futex_waitv with EPERM (as container
// runtimes whose profiles predate it do): an 8-byte wait falls back to
// sleeping on the low half instead of calling it again and again. Before
// the fix it retried at once, and a 300 ms wait burned 300 ms of CPU.
TEST_F(FieldWaitTest, AnEightByteWaitFallsBackWhenFutexWaitvIsForbidden) {
  uint64_t* word = Field<uint64_t>("c").address();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 449 /* futex_waitv */, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program = {static_cast<unsigned short>(std::size(filter)), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
      _exit(3);
    }
    timespec before, after;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &before);
    absl::StatusOr<uint64_t> r = WaitWhileEquals(word, 0, 300ms);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &after);
    if (!absl::IsDeadlineExceeded(r.status())) _exit(4);
    const double cpu_ms = (after.tv_sec - before.tv_sec) * 1e3 +
                          (after.tv_nsec - before.tv_nsec) / 1e6;
    _exit(cpu_ms < 100 ? 0 : 5);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 3) << "could not install the seccomp filter";
  EXPECT_NE(WEXITSTATUS(status), 4) << "the wait did not time out";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the wait spun on the forbidden call (CPU >= 100 ms)";
}

// ---- FieldWatch: the event-loop hook ----

// True if `fd` becomes readable within `timeout`.
bool Readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, static_cast<int>(timeout.count())) == 1 && (p.revents & POLLIN) != 0;
}

class FieldWatchTest : public FieldWaitTest {
 protected:
  void TearDown() override {
    internal::ForceFieldWatchPollingForTesting(false);
    FieldWaitTest::TearDown();
  }
};

TEST_F(FieldWatchTest, AStoreThenNotifyMakesTheDescriptorReadable) {
  auto watch = FieldWatch::Create();
  ASSERT_TRUE(watch.ok()) << watch.status();
  FieldWatch& w = **watch;
  absl::StatusOr<uint64_t> on_a = w.Watch(Field<uint32_t>("a"), 0u);
  absl::StatusOr<uint64_t> on_c = w.Watch(Field<uint64_t>("c"), uint64_t{0});
  ASSERT_TRUE(on_a.ok() && on_c.ok());
  EXPECT_EQ(w.armed(), 2u);
  EXPECT_EQ(w.words(), 3u);  // 1 + 2 halves
  EXPECT_FALSE(Readable(w.fd(), 50ms));
  // Another thread changes only c's high half, then notifies.
  std::thread writer([&] {
    Field<uint64_t>("c").store(uint64_t{5} << 32, std::memory_order_release);
    Field<uint64_t>("c").NotifyAll();
  });
  writer.join();
  ASSERT_TRUE(Readable(w.fd(), 5000ms)) << "the watch of c did not fire";
  EXPECT_EQ(w.TakeFired(), std::vector<uint64_t>{*on_c});
  EXPECT_FALSE(Readable(w.fd(), 0ms)) << "TakeFired resets the descriptor";
  EXPECT_EQ(w.armed(), 1u) << "one-shot: c's watch is disarmed";
  Field<uint32_t>("a").store(1);
  Field<uint32_t>("a").NotifyAll();
  ASSERT_TRUE(Readable(w.fd(), 5000ms));
  EXPECT_EQ(w.TakeFired(), std::vector<uint64_t>{*on_a});
  EXPECT_EQ(w.words(), 0u);
}

TEST_F(FieldWatchTest, AWatchOfAFieldThatAlreadyDiffersFiresAtOnceAndUnwatchDisarms) {
  auto watch = FieldWatch::Create();
  ASSERT_TRUE(watch.ok());
  Field<uint32_t>("b").store(9);
  absl::StatusOr<uint64_t> stale = (*watch)->Watch(Field<uint32_t>("b"), 0u);
  ASSERT_TRUE(stale.ok());
  EXPECT_TRUE(Readable((*watch)->fd(), 0ms)) << "fired within Watch";
  EXPECT_EQ((*watch)->TakeFired(), std::vector<uint64_t>{*stale});
  absl::StatusOr<uint64_t> gone = (*watch)->Watch(Field<double>("f"), 0.0);
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE((*watch)->Unwatch(*gone));
  EXPECT_FALSE((*watch)->Unwatch(*gone)) << "only once";
  Field<double>("f").store(1.5);
  Field<double>("f").NotifyAll();
  EXPECT_FALSE(Readable((*watch)->fd(), 100ms)) << "an unwatched field fired";
  EXPECT_TRUE((*watch)->TakeFired().empty());
}

TEST_F(FieldWatchTest, AWatchSaysWhenItHasNoWordLeft) {
  auto watch = FieldWatch::Create();
  ASSERT_TRUE(watch.ok());
  for (size_t i = 0; i < FieldWatch::kMaxWords / 2; ++i) {
    ASSERT_TRUE((*watch)->Watch(Field<uint64_t>("d"), uint64_t{0}).ok()) << i;
  }
  ASSERT_TRUE((*watch)->Watch(Field<uint32_t>("a"), 0u).ok());  // the last word
  EXPECT_EQ((*watch)->words(), FieldWatch::kMaxWords);
  absl::StatusOr<uint64_t> more = (*watch)->Watch(Field<uint32_t>("b"), 0u);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(more.status().message().find("another FieldWatch"), std::string_view::npos)
      << more.status();
  // Sleeping on 127 words works: one store of d fires its 63 watches.
  Field<uint64_t>("d").store(1);
  Field<uint64_t>("d").NotifyAll();
  ASSERT_TRUE(Readable((*watch)->fd(), 5000ms));
  EXPECT_EQ((*watch)->TakeFired().size(), FieldWatch::kMaxWords / 2);
  EXPECT_EQ((*watch)->words(), 1u);
}

double ProcessCpuMs() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

// Without futex_waitv the watch's thread looks every millisecond: it sees
// a store that nobody notified, and it sleeps between looks.
TEST_F(FieldWatchTest, WithoutFutexWaitvTheWatchPollsWithoutSpinning) {
  internal::ForceFieldWatchPollingForTesting(true);
  auto watch = FieldWatch::Create();
  ASSERT_TRUE(watch.ok());
  absl::StatusOr<uint64_t> id = (*watch)->Watch(Field<uint64_t>("c"), uint64_t{0});
  ASSERT_TRUE(id.ok());
  const double before = ProcessCpuMs();
  EXPECT_FALSE(Readable((*watch)->fd(), 300ms));
  EXPECT_LT(ProcessCpuMs() - before, 150) << "the polling thread spun";
  Field<uint64_t>("c").store(uint64_t{1} << 40);  // no Notify
  ASSERT_TRUE(Readable((*watch)->fd(), 1000ms)) << "polling missed a store";
  EXPECT_EQ((*watch)->TakeFired(), std::vector<uint64_t>{*id});
}

// With futex_waitv, a store that nobody notified wakes nobody (as with
// WaitChanged): the watch fires at the Notify.
TEST_F(FieldWatchTest, AStoreWithoutNotifyFiresOnlyAtTheNotify) {
  auto watch = FieldWatch::Create();
  ASSERT_TRUE(watch.ok());
  absl::StatusOr<uint64_t> id = (*watch)->Watch(Field<uint32_t>("b"), 0u);
  ASSERT_TRUE(id.ok());
  std::this_thread::sleep_for(20ms);  // the thread is asleep on b by now
  Field<uint32_t>("b").store(4);
  EXPECT_FALSE(Readable((*watch)->fd(), 100ms));
  Field<uint32_t>("b").Notify(1);
  ASSERT_TRUE(Readable((*watch)->fd(), 5000ms));
  EXPECT_EQ((*watch)->TakeFired(), std::vector<uint64_t>{*id});
}

// Two processes take turns as in FieldWaitPingPongTest, but this one waits
// in epoll on a FieldWatch's descriptor. A wake-up lost between the watch
// thread's look at the field and its sleep stalls a turn, and a turn longer
// than 2 s fails the test. Parameter: 4 or 8 bytes; 9, 8 bytes polling (no
// futex_waitv).
class FieldWatchPingPongTest : public FieldWatchTest,
                               public ::testing::WithParamInterface<int> {};

template <typename T>
bool PlayTurnsInAnEventLoop(Scalar<T> mine, Scalar<T> theirs, int rounds, int shift) {
  auto watch = FieldWatch::Create();
  if (!watch.ok()) return false;
  base::UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (epoll_ctl(ep.get(), EPOLL_CTL_ADD, (*watch)->fd(), &ev) != 0) return false;
  T seen = 0;
  for (int i = 1; i <= rounds; ++i) {
    const T value = static_cast<T>(i) << shift;
    mine.store(value, std::memory_order_release);
    mine.Notify(1);
    absl::StatusOr<uint64_t> id = (*watch)->Watch(theirs, seen);
    if (!id.ok()) return false;
    const auto start = std::chrono::steady_clock::now();
    std::vector<uint64_t> fired;
    while (fired.empty()) {
      epoll_event out;
      if (epoll_wait(ep.get(), &out, 1, 2000) != 1) return false;  // stalled
      fired = (*watch)->TakeFired();
    }
    if (fired != std::vector<uint64_t>{*id} || theirs.load() != value ||
        std::chrono::steady_clock::now() - start > 2s) {
      return false;
    }
    seen = value;
  }
  return true;
}

TEST_P(FieldWatchPingPongTest, NoWakeUpIsLostBetweenAWatchAndAnotherProcess) {
  const int mode = GetParam();
  if (mode == 9) internal::ForceFieldWatchPollingForTesting(true);
  const int kRounds = mode == 9 ? 500 : 5000;  // polling: about 1 ms a turn
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The other side answers each value with WaitChanged.
    bool ok = mode == 4 ? PlayTurns(Field<uint32_t>("b"), Field<uint32_t>("a"), kRounds, false, 0)
                        : PlayTurns(Field<uint64_t>("d"), Field<uint64_t>("c"), kRounds, false, 32);
    _exit(ok ? 0 : 1);
  }
  const bool ok =
      mode == 4 ? PlayTurnsInAnEventLoop(Field<uint32_t>("a"), Field<uint32_t>("b"), kRounds, 0)
                : PlayTurnsInAnEventLoop(Field<uint64_t>("c"), Field<uint64_t>("d"), kRounds, 32);
  ExpectBothSidesPlayed(child, ok, "the event loop's turn stalled or saw a wrong value");
}

INSTANTIATE_TEST_SUITE_P(Sizes, FieldWatchPingPongTest, ::testing::Values(4, 8, 9),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == 4   ? std::string("FourBytes")
                                  : info.param == 8 ? std::string("EightBytes")
                                                    : std::string("EightBytesPolling");
                         });

}  // namespace
}  // namespace structd::shm
