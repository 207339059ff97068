// shm_bench: what the structd::shm fast paths cost next to the obvious
// alternatives, measured side by side in one run, with a ratio table at the
// end checked against the 2x budget.
//
// Method
//
// Field access. One u64 field of one instance, allocated once in a real
// arena (a mkdtemp directory under /dev/shm) and resolved once, is compared
// with a std::atomic<uint64_t> placed in a plain MAP_SHARED|MAP_ANONYMOUS
// page. Each lies within one 64-byte line, both use relaxed order
// (structd's default), and every result goes through DoNotOptimize (stores
// through ClobberMemory) so no access is folded away. Two pairs per op:
//   * Scalar:  the Scalar<uint64_t> is built from the FieldHandle once,
//     outside the loop; versus the raw atomic through a hoisted pointer.
//     This isolates the accessor itself.
//   * Handle:  `handle.scalar<uint64_t>(inst).load()` each iteration, which
//     is what users write. The handle and InstancePtr are laundered through
//     DoNotOptimize every iteration so the compiler cannot hoist the address
//     computation (in real code they come from elsewhere); the raw baseline
//     for this pair launders its pointer the same way, so both sides hide
//     the same amount from the optimizer.
//
// Allocation. A layout {u64 counter, array<u8,40> pad} has a 48-byte
// payload, so an instance is one 64-byte block (16-byte header + 48), the
// 64-byte size class. structd::shm::Allocator::Allocate is compared with
// Boost.Interprocess segment_manager::allocate(64) in a managed_mapped_file
// in the same tmpfs directory (so both sides fault in the same kind of
// pages). Each timed iteration is one allocation; every kBatch (10000)
// allocations the benchmark pauses the timer, frees the whole batch, and
// resumes. So both sides are timed on exactly the same pattern: allocating
// from a warmed allocator whose free memory was just returned, a batch at a
// time, with memory bounded by one batch. The pause/resume cost (a few clock
// reads) is spread over 10000 allocations, i.e. well under 1 ns each, and is
// paid identically by both sides; frees are deliberately not measured.
// Differences that remain, by design of the two allocators:
//   * structd zeroes the payload and publishes a header (refcount, type
//     index with release); Boost hands back uninitialized memory.
//   * allocate(64) gives Boost 64 usable bytes plus its own block header;
//     the structd block is 64 bytes in all, 48 of them payload.
//   * Boost's default segment manager locks an interprocess mutex per call;
//     structd's Allocator takes no lock (its caller, the daemon, already
//     serializes). The target row uses Boost's default, as users would; an
//     extra informational row uses Boost with null_mutex_family, comparing
//     allocation algorithms alone.
//
// Loop alignment. The field loops are a handful of instructions, one or two
// cycles per iteration, so where the compiler happens to place them matters:
// on the AMD EPYC this was written on, the same add/mov/cmp/jne loop ran at
// 0.33 ns or 0.63 ns depending on whether it straddled a 64-byte boundary,
// which made identical code look 1.9x slower. shm/CMakeLists.txt builds this
// file with -falign-loops=64 so every loop starts on a fresh line and the
// pairs differ only in the code they run. If a field ratio moves a lot after
// an unrelated edit, check the loops' addresses (objdump -d) first.
//
// Wake-up. A round trip between this process and a forked partner, each
// waking the other through a field (store, notify; the other waits for the
// change): Scalar<T>::WaitChanged / Notify on 4- and 8-byte fields versus
// the same ping-pong written by hand with FUTEX_WAIT / FUTEX_WAKE, on the
// same arena words. Wall time (half the work is in the partner). For
// information, the same round trip with this side waiting in epoll on a
// FieldWatch's descriptor (the event-loop hook).
//
// Ratios. A custom reporter forwards everything to the console reporter and
// records each benchmark's CPU time per iteration (CPU time, because this
// machine is shared and wall time includes preemption). With
// --benchmark_repetitions the median aggregate is used, else the mean of the
// runs. After the run, a table gives structd / baseline for each pair with
// its target; a miss is printed as MISS but the exit code stays 0 (a
// benchmark reports, tests assert). The exit code is non-zero only if a
// benchmark reported an error or the fixture could not be set up.
//
// STRUCTD_BENCH_SMOKE=1 runs every benchmark with a 10 ms minimum time, for
// the shm_bench_smoke CTest entry that checks the program still runs.

#include <linux/futex.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "benchmark/benchmark.h"
#include "boost/interprocess/indexes/iset_index.hpp"
#include "boost/interprocess/managed_mapped_file.hpp"
#include "boost/interprocess/mem_algo/rbtree_best_fit.hpp"
#include "boost/interprocess/offset_ptr.hpp"
#include "boost/interprocess/sync/mutex_family.hpp"
#include "structd/shm/allocator.h"
#include "tests/bench/bench_report.h"
#include "structd/shm/arena.h"
#include "structd/shm/field.h"
#include "structd/shm/field_watch.h"
#include "structd/shm/layout.h"
#include "structd/shm/port_ring.h"
#include "structd/shm/ref.h"

namespace structd::shm {
namespace {

namespace bip = ::boost::interprocess;
using bench::CollectingReporter;
using bench::Pair;

constexpr uint32_t kTypeIndex = 1;
constexpr size_t kBatch = 10000;
constexpr size_t kAllocBytes = 64;
constexpr uint64_t kExtentSize = 64ull << 20;
// One batch needs ~640 KiB of the first extent. The spare extents are
// headroom in case the allocator grows; each one costs 64 MiB of tmpfs.
constexpr uint32_t kMaxExtents = 4;
constexpr size_t kBoostSegmentBytes = 64ull << 20;

// Boost with its default (mutex) and with no locking; see the top comment.
using BoostFile = bip::managed_mapped_file;
using BoostFileNoLock = bip::basic_managed_mapped_file<
    char, bip::rbtree_best_fit<bip::null_mutex_family, bip::offset_ptr<void>>,
    bip::iset_index>;

// Everything the benchmarks share. Built in main() before any benchmark
// runs and torn down (directory removed) after the last one.
struct Fixture {
  std::string dir;
  std::unique_ptr<Arena> arena;
  std::unique_ptr<Allocator> allocator;
  Layout layout;
  FieldHandle counter;
  InstancePtr instance;                  // the field benchmarks' instance
  std::atomic<uint64_t>* raw = nullptr;  // in a MAP_SHARED|MAP_ANONYMOUS page
  void* raw_page = nullptr;
  std::unique_ptr<BoostFile> boost;
  std::unique_ptr<BoostFileNoLock> boost_nolock;

  ~Fixture() {
    // Mappings before files: Boost and the arena unmap in their destructors.
    boost.reset();
    boost_nolock.reset();
    allocator.reset();
    arena.reset();
    if (raw_page != nullptr) munmap(raw_page, 4096);
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      if (ec) {
        std::fprintf(stderr, "shm_bench: could not remove %s: %s\n",
                     dir.c_str(), ec.message().c_str());
      }
    }
  }
};

Fixture* g_fixture = nullptr;

// A run killed by a signal (Ctrl-C, a CTest timeout, SIGPIPE from
// `shm_bench | head`, a crash) would otherwise leave its directory, with a
// fully backed 64 MiB extent, in /dev/shm. The handler removes every path
// the run can create, using only unlink/rmdir (async-signal-safe) on strings
// built before it is installed, then re-raises so the exit status still
// shows the signal.
constexpr int kCleanupSignals[] = {SIGHUP, SIGINT, SIGQUIT, SIGILL,  SIGABRT,
                                   SIGBUS, SIGFPE, SIGSEGV, SIGPIPE, SIGTERM};
// Files first, then the directories holding them. Written only while no
// handler is installed.
std::vector<std::string> g_cleanup_paths;

extern "C" void CleanupAndReraise(int sig) {
  for (const std::string& path : g_cleanup_paths) {
    if (unlink(path.c_str()) != 0) rmdir(path.c_str());
  }
  // SA_RESETHAND restored the default action: this one ends the process
  // (delivered once the handler returns, as the signal is blocked here).
  raise(sig);
}

void InstallCleanupHandlers(const std::string& dir) {
  const std::string arena = dir + "/arena";
  // Arena file names: format.h (DIR/arena, DIR/extent.N) plus the
  // temporaries Create and Grow use while building them.
  g_cleanup_paths = {dir + "/boost", dir + "/boost_nolock", arena + "/arena",
                     arena + "/arena.tmp." + std::to_string(getpid())};
  for (uint32_t i = 0; i < kMaxExtents; ++i) {
    g_cleanup_paths.push_back(arena + "/extent." + std::to_string(i));
    g_cleanup_paths.push_back(arena + "/extent." + std::to_string(i) + ".tmp");
  }
  g_cleanup_paths.push_back(arena);
  g_cleanup_paths.push_back(dir);
  struct sigaction sa = {};
  sa.sa_handler = CleanupAndReraise;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (int sig : kCleanupSignals) sigaction(sig, &sa, nullptr);
}

void RestoreDefaultHandlers() {
  for (int sig : kCleanupSignals) signal(sig, SIG_DFL);
}

absl::Status SetUpFixture(Fixture& f) {
  char tmpl[] = "/dev/shm/structd_bench.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    return absl::InternalError(std::string("mkdtemp under /dev/shm: ") +
                               std::strerror(errno));
  }
  f.dir = tmpl;
  InstallCleanupHandlers(f.dir);

  ArenaOptions options;
  options.extent_size = kExtentSize;
  options.max_extents = kMaxExtents;
  options.initial_extents = 1;
  absl::StatusOr<std::unique_ptr<Arena>> arena =
      Arena::Create(f.dir + "/arena", options);
  if (!arena.ok()) return arena.status();
  f.arena = std::move(*arena);
  absl::StatusOr<std::unique_ptr<Allocator>> allocator =
      Allocator::Adopt(f.arena.get());
  if (!allocator.ok()) return allocator.status();
  f.allocator = std::move(*allocator);

  // 8 + 40 = 48 payload bytes, align 8: a 64-byte block with the header.
  absl::StatusOr<Layout> layout = Layout::Compute({
      FieldSpec::Scalar("counter", FieldKind::kU64),
      FieldSpec::Array("pad", FieldKind::kU8, 40),
  });
  if (!layout.ok()) return layout.status();
  f.layout = std::move(*layout);
  if (kInstanceHeaderSize + f.layout.size() != kAllocBytes) {
    return absl::InternalError("bench layout is not a 64-byte block");
  }
  absl::StatusOr<FieldHandle> counter =
      FieldHandle::BindScalar<uint64_t>(f.layout, "counter");
  if (!counter.ok()) return counter.status();
  f.counter = *counter;

  absl::StatusOr<Ref> ref = f.allocator->Allocate(kTypeIndex, f.layout);
  if (!ref.ok()) return ref.status();
  absl::StatusOr<InstancePtr> instance = f.arena->Resolve(*ref);
  if (!instance.ok()) return instance.status();
  f.instance = *instance;

  f.raw_page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (f.raw_page == MAP_FAILED) {
    f.raw_page = nullptr;
    return absl::InternalError(std::string("mmap: ") + std::strerror(errno));
  }
  f.raw = new (f.raw_page) std::atomic<uint64_t>(0);

  try {
    f.boost = std::make_unique<BoostFile>(
        bip::create_only, (f.dir + "/boost").c_str(), kBoostSegmentBytes);
    f.boost_nolock = std::make_unique<BoostFileNoLock>(
        bip::create_only, (f.dir + "/boost_nolock").c_str(),
        kBoostSegmentBytes);
  } catch (const std::exception& e) {
    return absl::InternalError(std::string("boost segment: ") + e.what());
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Field load / store / fetch_add.

void BM_FieldLoad_RawAtomic(benchmark::State& state) {
  std::atomic<uint64_t>* p = g_fixture->raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p->load(std::memory_order_relaxed));
  }
}
BENCHMARK(BM_FieldLoad_RawAtomic);

void BM_FieldLoad_Scalar(benchmark::State& state) {
  Scalar<uint64_t> s = g_fixture->counter.scalar<uint64_t>(g_fixture->instance);
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.load());
  }
}
BENCHMARK(BM_FieldLoad_Scalar);

void BM_FieldLoad_RawAtomicReloaded(benchmark::State& state) {
  std::atomic<uint64_t>* p = g_fixture->raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    benchmark::DoNotOptimize(p->load(std::memory_order_relaxed));
  }
}
BENCHMARK(BM_FieldLoad_RawAtomicReloaded);

void BM_FieldLoad_Handle(benchmark::State& state) {
  FieldHandle handle = g_fixture->counter;
  InstancePtr inst = g_fixture->instance;
  for (auto _ : state) {
    benchmark::DoNotOptimize(handle);
    benchmark::DoNotOptimize(inst);
    benchmark::DoNotOptimize(handle.scalar<uint64_t>(inst).load());
  }
}
BENCHMARK(BM_FieldLoad_Handle);

void BM_FieldStore_RawAtomic(benchmark::State& state) {
  std::atomic<uint64_t>* p = g_fixture->raw;
  uint64_t v = 0;
  for (auto _ : state) {
    p->store(++v, std::memory_order_relaxed);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_FieldStore_RawAtomic);

void BM_FieldStore_Scalar(benchmark::State& state) {
  Scalar<uint64_t> s = g_fixture->counter.scalar<uint64_t>(g_fixture->instance);
  uint64_t v = 0;
  for (auto _ : state) {
    s.store(++v);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_FieldStore_Scalar);

void BM_FieldStore_RawAtomicReloaded(benchmark::State& state) {
  std::atomic<uint64_t>* p = g_fixture->raw;
  uint64_t v = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    p->store(++v, std::memory_order_relaxed);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_FieldStore_RawAtomicReloaded);

void BM_FieldStore_Handle(benchmark::State& state) {
  FieldHandle handle = g_fixture->counter;
  InstancePtr inst = g_fixture->instance;
  uint64_t v = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(handle);
    benchmark::DoNotOptimize(inst);
    handle.scalar<uint64_t>(inst).store(++v);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_FieldStore_Handle);

void BM_FieldFetchAdd_RawAtomic(benchmark::State& state) {
  std::atomic<uint64_t>* p = g_fixture->raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p->fetch_add(1, std::memory_order_relaxed));
  }
}
BENCHMARK(BM_FieldFetchAdd_RawAtomic);

void BM_FieldFetchAdd_Scalar(benchmark::State& state) {
  Scalar<uint64_t> s = g_fixture->counter.scalar<uint64_t>(g_fixture->instance);
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.fetch_add(1));
  }
}
BENCHMARK(BM_FieldFetchAdd_Scalar);

void BM_FieldFetchAdd_RawAtomicReloaded(benchmark::State& state) {
  std::atomic<uint64_t>* p = g_fixture->raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    benchmark::DoNotOptimize(p->fetch_add(1, std::memory_order_relaxed));
  }
}
BENCHMARK(BM_FieldFetchAdd_RawAtomicReloaded);

void BM_FieldFetchAdd_Handle(benchmark::State& state) {
  FieldHandle handle = g_fixture->counter;
  InstancePtr inst = g_fixture->instance;
  for (auto _ : state) {
    benchmark::DoNotOptimize(handle);
    benchmark::DoNotOptimize(inst);
    benchmark::DoNotOptimize(handle.scalar<uint64_t>(inst).fetch_add(1));
  }
}
BENCHMARK(BM_FieldFetchAdd_Handle);

// ---------------------------------------------------------------------------
// Wake-up latency: a round trip between this process and a forked partner,
// each waking the other by changing a field and notifying. One iteration is
// two wake-ups (wall time: half of it is the partner's). structd's
// Scalar<T>::WaitChanged / Notify against the same ping-pong written by hand
// with FUTEX_WAIT / FUTEX_WAKE, on the same words of an arena instance.

constexpr uint32_t kStopPlaying = 0xFFFFFFFFu;

// The hand-written futex ping-pong's two operations.
void RawWaitWhileEquals(uint32_t* word, uint32_t seen) {
  while (std::atomic_ref<uint32_t>(*word).load(std::memory_order_acquire) == seen) {
    syscall(SYS_futex, word, FUTEX_WAIT, seen, nullptr, nullptr, 0);
  }
}
void RawNotifyOne(uint32_t* word) {
  syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

// How this process waits for the partner's answer.
enum class WakeMode {
  kRawFutex,    // FUTEX_WAIT written by hand (the partner too)
  kWaitChanged, // Scalar<T>::WaitChanged (the partner too)
  kEventLoop,   // epoll on a FieldWatch's descriptor (the partner: WaitChanged)
};

// `Word` is uint32_t or uint64_t.
template <typename Word, WakeMode kMode>
void WakeRoundTrip(benchmark::State& state) {
  constexpr bool kRaw = kMode == WakeMode::kRawFutex;
  // Two fields in the fixture instance's padding (offsets 8 and 16).
  uint8_t* payload = g_fixture->instance.payload();
  Word* ping = reinterpret_cast<Word*>(payload + 8);
  Word* pong = reinterpret_cast<Word*>(payload + 16);
  std::atomic_ref<Word>(*ping).store(0);
  std::atomic_ref<Word>(*pong).store(0);
  auto wait_while = [](Word* word, Word seen) {
    if constexpr (kRaw) {
      static_assert(sizeof(Word) == 4, "the raw baseline is 4 bytes");
      RawWaitWhileEquals(word, seen);
    } else {
      (void)Scalar<Word>(word).WaitChanged(seen);
    }
  };
  auto set_and_wake = [](Word* word, Word value) {
    std::atomic_ref<Word>(*word).store(value, std::memory_order_release);
    if constexpr (kRaw) {
      RawNotifyOne(word);
    } else {
      Scalar<Word>(word).Notify(1);
    }
  };
  pid_t partner = fork();
  if (partner < 0) {
    state.SkipWithError("fork failed");
    return;
  }
  if (partner == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a benchmark that died
    Word seen = 0;
    for (;;) {
      wait_while(ping, seen);
      seen = std::atomic_ref<Word>(*ping).load(std::memory_order_acquire);
      if (seen == kStopPlaying) _exit(0);
      set_and_wake(pong, seen);
    }
  }
  // The event loop's pieces (created after the fork: the partner has no
  // watch thread).
  std::unique_ptr<FieldWatch> watch;
  base::UniqueFd ep;
  if constexpr (kMode == WakeMode::kEventLoop) {
    absl::StatusOr<std::unique_ptr<FieldWatch>> made = FieldWatch::Create();
    ep = base::UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (!made.ok() || ep.get() < 0 ||
        epoll_ctl(ep.get(), EPOLL_CTL_ADD, (*made)->fd(), &ev) != 0) {
      state.SkipWithError("FieldWatch or epoll failed");
    } else {
      watch = std::move(*made);
    }
  }
  Word round = 0;
  for (auto _ : state) {
    if (kMode == WakeMode::kEventLoop && watch == nullptr) break;
    ++round;
    set_and_wake(ping, round);
    if constexpr (kMode == WakeMode::kEventLoop) {
      (void)watch->Watch(Scalar<Word>(pong), static_cast<Word>(round - 1));
      epoll_event out;
      do {
        epoll_wait(ep.get(), &out, 1, -1);
      } while (watch->TakeFired().empty());
    } else {
      wait_while(pong, round - 1);
    }
  }
  set_and_wake(ping, kStopPlaying);
  int status = 0;
  waitpid(partner, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    state.SkipWithError("the partner process failed");
  }
}

void BM_WakeRoundTrip_RawFutex(benchmark::State& state) {
  WakeRoundTrip<uint32_t, WakeMode::kRawFutex>(state);
}
BENCHMARK(BM_WakeRoundTrip_RawFutex)->UseRealTime();

void BM_WakeRoundTrip_WaitChanged32(benchmark::State& state) {
  WakeRoundTrip<uint32_t, WakeMode::kWaitChanged>(state);
}
BENCHMARK(BM_WakeRoundTrip_WaitChanged32)->UseRealTime();

void BM_WakeRoundTrip_WaitChanged64(benchmark::State& state) {
  WakeRoundTrip<uint64_t, WakeMode::kWaitChanged>(state);
}
BENCHMARK(BM_WakeRoundTrip_WaitChanged64)->UseRealTime();

// This side waits in epoll on a FieldWatch: one more thread hop (the
// watch's thread wakes, writes the eventfd, epoll wakes this one).
void BM_WakeRoundTrip_FieldWatchEpoll(benchmark::State& state) {
  WakeRoundTrip<uint32_t, WakeMode::kEventLoop>(state);
}
BENCHMARK(BM_WakeRoundTrip_FieldWatchEpoll)->UseRealTime();

// ---------------------------------------------------------------------------
// Allocation of a 64-byte block, timed per allocation, freed per batch with
// the timer paused (see the top comment).

void BM_Alloc64_Structd(benchmark::State& state) {
  Allocator& allocator = *g_fixture->allocator;
  const Layout& layout = g_fixture->layout;
  const Allocator::TypeLookup types = [&layout](uint32_t type_index) {
    return type_index == kTypeIndex ? &layout : nullptr;
  };
  std::vector<Ref> live;
  live.reserve(kBatch);
  std::string error;
  auto free_all = [&] {
    for (Ref r : live) {
      absl::StatusOr<ReleaseResult> released = allocator.Release(r, types);
      if (!released.ok() && error.empty()) {
        error = std::string(released.status().message());
      }
    }
    live.clear();
  };
  for (auto _ : state) {
    absl::StatusOr<Ref> ref = allocator.Allocate(kTypeIndex, layout);
    if (!ref.ok()) {
      error = std::string(ref.status().message());
      break;
    }
    live.push_back(*ref);
    if (live.size() == kBatch) {
      state.PauseTiming();
      free_all();
      state.ResumeTiming();
      if (!error.empty()) break;
    }
  }
  // The timer has stopped once the loop is done.
  free_all();
  if (!error.empty()) state.SkipWithError(error.c_str());
}
BENCHMARK(BM_Alloc64_Structd);

template <typename Segment>
void AllocBoost(benchmark::State& state, Segment& segment) {
  auto* manager = segment.get_segment_manager();
  std::vector<void*> live;
  live.reserve(kBatch);
  auto free_all = [&] {
    for (void* p : live) manager->deallocate(p);
    live.clear();
  };
  bool failed = false;
  for (auto _ : state) {
    void* p = manager->allocate(kAllocBytes, std::nothrow);
    if (p == nullptr) {
      failed = true;
      break;
    }
    live.push_back(p);
    if (live.size() == kBatch) {
      state.PauseTiming();
      free_all();
      state.ResumeTiming();
    }
  }
  free_all();
  if (failed) state.SkipWithError("boost segment allocate(64) failed");
}

void BM_Alloc64_BoostMappedFile(benchmark::State& state) {
  AllocBoost(state, *g_fixture->boost);
}
BENCHMARK(BM_Alloc64_BoostMappedFile);

void BM_Alloc64_BoostMappedFileNoLock(benchmark::State& state) {
  AllocBoost(state, *g_fixture->boost_nolock);
}
BENCHMARK(BM_Alloc64_BoostMappedFileNoLock);

// ---------------------------------------------------------------------------
// Handing a reference to another process: an 8-byte message there and back
// (one iteration: two hand-overs; one-way latency is half) through a pair
// of port rings (shm::PortRing, the ring under issue 18's ports, without
// the session records around it yet), with the receiver spinning or
// sleeping, versus the same 8 bytes over a Unix socketpair. Throughput:
// 1 sender and 1 receiver, 2 and 2, each a process, 200,000 messages (a
// port of 1,024) per iteration.

// Two rings and a lane and slot per process, in memory the fork shares.
struct RingPair {
  static constexpr uint32_t kCapacity = 1024;
  static constexpr size_t kRingBytes = 64 * 1024;  // >= PortRing::BytesFor(1024)
  void* mem = nullptr;
  std::optional<PortRing> ping, pong;
  MoveLane* lanes = nullptr;  // 8
  uint64_t* slots = nullptr;  // 8
  std::atomic<uint64_t>* counters = nullptr;
  RingPair() {
    mem = mmap(nullptr, 2 * kRingBytes + 4096, PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    auto* bytes = static_cast<uint8_t*>(mem);
    (void)PortRing::Format(bytes, kRingBytes, kCapacity);
    (void)PortRing::Format(bytes + kRingBytes, kRingBytes, kCapacity);
    ping.emplace(*PortRing::Attach(bytes, kRingBytes));
    pong.emplace(*PortRing::Attach(bytes + kRingBytes, kRingBytes));
    lanes = reinterpret_cast<MoveLane*>(bytes + 2 * kRingBytes);
    slots = reinterpret_cast<uint64_t*>(bytes + 2 * kRingBytes + 8 * sizeof(MoveLane));
    counters = reinterpret_cast<std::atomic<uint64_t>*>(slots + 8);
  }
  ~RingPair() { munmap(mem, 2 * kRingBytes + 4096); }
  MoveContext Mover(uint32_t i) { return MoveContext{&lanes[i], i + 1, &slots[i], i, 1}; }
};

constexpr uint64_t kStopRing = ~uint64_t{0} >> 8;

// Forks `fn` as a partner that dies with this process.
template <typename Fn>
pid_t ForkPartner(Fn fn) {
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    _exit(fn() ? 0 : 1);
  }
  return pid;
}

bool PartnerSucceeded(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void HandOverRoundTripRing(benchmark::State& state, uint32_t spin) {
  RingPair rings;
  const PortWait wait{std::chrono::seconds(10), spin};
  pid_t partner = ForkPartner([&] {
    for (;;) {
      rings.slots[1] = 0;
      if (!rings.ping->Receive(rings.Mover(1), wait).ok()) return false;
      const uint64_t got = rings.slots[1];
      if (got == kStopRing) return true;
      if (!rings.pong->Send(rings.Mover(1), wait).ok()) return false;
    }
  });
  uint64_t round = 0;
  for (auto _ : state) {
    rings.slots[0] = ++round;
    rings.slots[2] = 0;
    if (!rings.ping->Send(rings.Mover(0), wait).ok() ||
        !rings.pong->Receive(rings.Mover(2), wait).ok() || rings.slots[2] != round) {
      state.SkipWithError("ring hand-over failed");
      break;
    }
  }
  rings.slots[0] = kStopRing;
  (void)rings.ping->Send(rings.Mover(0), wait);
  if (!PartnerSucceeded(partner)) state.SkipWithError("the partner process failed");
}

void BM_HandOverRoundTrip_PortRingBlocking(benchmark::State& state) {
  HandOverRoundTripRing(state, 0);
}
BENCHMARK(BM_HandOverRoundTrip_PortRingBlocking)->UseRealTime();

void BM_HandOverRoundTrip_PortRingSpin(benchmark::State& state) {
  HandOverRoundTripRing(state, 1u << 24);
}
BENCHMARK(BM_HandOverRoundTrip_PortRingSpin)->UseRealTime();

void BM_HandOverRoundTrip_UnixSocket(benchmark::State& state) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return state.SkipWithError("socketpair failed");
  }
  pid_t partner = ForkPartner([&] {
    close(sv[0]);
    uint64_t ref = 0;
    while (read(sv[1], &ref, 8) == 8 && ref != kStopRing) {
      if (write(sv[1], &ref, 8) != 8) return false;
    }
    return true;
  });
  close(sv[1]);
  uint64_t round = 0, back = 0;
  for (auto _ : state) {
    ++round;
    if (write(sv[0], &round, 8) != 8 || read(sv[0], &back, 8) != 8 || back != round) {
      state.SkipWithError("socket hand-over failed");
      break;
    }
  }
  (void)!write(sv[0], &kStopRing, 8);
  close(sv[0]);
  if (!PartnerSucceeded(partner)) state.SkipWithError("the partner process failed");
}
BENCHMARK(BM_HandOverRoundTrip_UnixSocket)->UseRealTime();

// Senders and receivers (range 0 and 1), each a process, moving
// kMessages through one ring; senders spin a little, then block.
void BM_PortRingThroughput(benchmark::State& state) {
  constexpr uint64_t kMessages = 200000;
  const auto senders = static_cast<uint32_t>(state.range(0));
  const auto receivers = static_cast<uint32_t>(state.range(1));
  const PortWait wait{std::chrono::seconds(10), 200};
  for (auto _ : state) {
    RingPair rings;
    std::atomic<uint64_t>& received = rings.counters[0];
    std::vector<pid_t> pids;
    for (uint32_t r = 0; r < receivers; ++r) {
      pids.push_back(ForkPartner([&, r] {
        const uint32_t me = senders + r;
        while (received.load(std::memory_order_relaxed) < kMessages) {
          rings.slots[me] = 0;
          absl::Status st = rings.ping->Receive(rings.Mover(me), {std::chrono::milliseconds(5), 200});
          if (st.ok()) {
            received.fetch_add(1, std::memory_order_relaxed);
          } else if (st.code() != absl::StatusCode::kDeadlineExceeded) {
            return false;
          }
        }
        return true;
      }));
    }
    for (uint32_t s = 0; s < senders; ++s) {
      pids.push_back(ForkPartner([&, s] {
        for (uint64_t i = s; i < kMessages; i += senders) {
          rings.slots[s] = i + 1;
          if (!rings.ping->Send(rings.Mover(s), wait).ok()) return false;
        }
        return true;
      }));
    }
    bool ok = true;
    for (pid_t pid : pids) ok = PartnerSucceeded(pid) && ok;
    if (!ok || received.load() != kMessages) {
      state.SkipWithError("a sender or receiver failed");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kMessages));
}
BENCHMARK(BM_PortRingThroughput)->Args({1, 1})->Args({2, 2})->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// Reporting.

constexpr Pair kPairs[] = {
    {"field load (Scalar)", "BM_FieldLoad_Scalar", "BM_FieldLoad_RawAtomic",
     "raw atomic", 2.0},
    {"field load (handle each iter)", "BM_FieldLoad_Handle",
     "BM_FieldLoad_RawAtomicReloaded", "raw atomic, ptr reloaded", 2.0},
    {"field store (Scalar)", "BM_FieldStore_Scalar", "BM_FieldStore_RawAtomic",
     "raw atomic", 2.0},
    {"field store (handle each iter)", "BM_FieldStore_Handle",
     "BM_FieldStore_RawAtomicReloaded", "raw atomic, ptr reloaded", 2.0},
    {"field fetch_add (Scalar)", "BM_FieldFetchAdd_Scalar",
     "BM_FieldFetchAdd_RawAtomic", "raw atomic", 2.0},
    {"field fetch_add (handle each iter)", "BM_FieldFetchAdd_Handle",
     "BM_FieldFetchAdd_RawAtomicReloaded", "raw atomic, ptr reloaded", 2.0},
    {"alloc 64B", "BM_Alloc64_Structd", "BM_Alloc64_BoostMappedFile",
     "boost managed_mapped_file", 2.0},
    {"alloc 64B (info: boost unlocked)", "BM_Alloc64_Structd",
     "BM_Alloc64_BoostMappedFileNoLock", "boost null_mutex", 0.0},
    {"wake round trip, WaitChanged/Notify u32", "BM_WakeRoundTrip_WaitChanged32",
     "BM_WakeRoundTrip_RawFutex", "hand-written futex", 1.5, /*wall=*/true},
    {"wake round trip, WaitChanged/Notify u64", "BM_WakeRoundTrip_WaitChanged64",
     "BM_WakeRoundTrip_RawFutex", "hand-written futex (u32)", 1.5, /*wall=*/true},
    {"wake round trip, FieldWatch + epoll (info)", "BM_WakeRoundTrip_FieldWatchEpoll",
     "BM_WakeRoundTrip_RawFutex", "hand-written futex", 0.0, /*wall=*/true},
    {"ref hand-over round trip, port ring, blocking", "BM_HandOverRoundTrip_PortRingBlocking",
     "BM_HandOverRoundTrip_UnixSocket", "Unix socketpair", 1.0, /*wall=*/true},
    {"ref hand-over round trip, port ring, spinning (info)",
     "BM_HandOverRoundTrip_PortRingSpin", "BM_HandOverRoundTrip_UnixSocket",
     "Unix socketpair", 0.0, /*wall=*/true},
};

}  // namespace
}  // namespace structd::shm

int main(int argc, char** argv) {
  using structd::shm::Fixture;

  structd::bench::Args args = structd::bench::SmokeArgs(argc, argv);
  const auto options = structd::bench::InitializeBenchmarks(args);
  if (!options) return 1;

  // Declared before the fixture is used and destroyed after the run, so the
  // temp directory goes away on every normal exit path.
  auto fixture = std::make_unique<Fixture>();
  if (absl::Status s = structd::shm::SetUpFixture(*fixture); !s.ok()) {
    std::fprintf(stderr, "shm_bench: setup failed: %s\n", s.ToString().c_str());
    structd::shm::RestoreDefaultHandlers();
    return 1;  // ~Fixture removes whatever was created
  }
  structd::shm::g_fixture = fixture.get();

  const int rc = structd::bench::RunBenchmarks("shm_bench", *options, structd::shm::kPairs);
  structd::shm::g_fixture = nullptr;
  structd::shm::RestoreDefaultHandlers();
  fixture.reset();
  return rc;
}
