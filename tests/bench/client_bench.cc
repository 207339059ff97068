// client_bench: field access through the typed client API (a view from
// STRUCTD_STRUCT, on an instance the daemon allocated in a real arena)
// next to a raw std::atomic<uint64_t> on a plain MAP_SHARED page, in one
// run, with the ratio table at the end (target: at most 2x).
//
// Method: as shm/bench/shm_bench.cc. Two pairs per operation:
//   * Field: the accessor (`counter.hits()`) is taken once outside the
//     loop, versus the raw atomic through a hoisted pointer.
//   * View each iteration: `view.hits().load()` every iteration with the
//     view laundered through DoNotOptimize (in real code it comes from
//     elsewhere), versus the raw atomic with its pointer laundered the same.
// Relaxed order on both sides (the API's default); loops aligned to 64
// bytes (-falign-loops=64) so placement does not decide the result. An
// View<T>(ref) row times Channel::View<T>(ref) (resolve and type check)
// plus the load, against a load through a pointer reloaded each time.
//
// The program starts its own structd (a temp socket and state directory)
// and stops it at the end. STRUCTD_BENCH_SMOKE=1: ~10 ms per benchmark.

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <cstdio>
#include <memory>
#include <new>

#include <benchmark/benchmark.h>

#include "boost/interprocess/managed_shared_memory.hpp"

#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "testing/daemon_process.h"
#include "tests/bench/bench_daemon.h"
#include "tests/bench/bench_report.h"

namespace structd::bench {
namespace {

#define BENCH_COUNTER_FIELDS(F) F(hits, u64)
STRUCTD_STRUCT(BenchCounter, BENCH_COUNTER_FIELDS);

namespace bip = ::boost::interprocess;

struct Fixture : BenchDaemon {
  client::Owned<BenchCounter> counter;
  std::atomic<uint64_t>* raw = nullptr;
  void* raw_page = nullptr;
  std::string boost_name = "structd_client_bench_" + std::to_string(getpid());
  std::unique_ptr<bip::managed_shared_memory> boost;
  ~Fixture() {
    boost.reset();
    bip::shared_memory_object::remove(boost_name.c_str());
    counter.Reset();
    if (raw_page != nullptr) munmap(raw_page, 4096);
  }
};
Fixture* g = nullptr;

absl::Status SetUp(Fixture& f) {
  if (absl::Status s = f.Start("bench"); !s.ok()) return s;
  auto counter = f.ch().Allocate<BenchCounter>();
  if (!counter.ok()) return counter.status();
  f.counter = std::move(*counter);
  f.raw_page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (f.raw_page == MAP_FAILED) {
    f.raw_page = nullptr;
    return absl::InternalError("mmap failed");
  }
  f.raw = new (f.raw_page) std::atomic<uint64_t>(0);
  bip::shared_memory_object::remove(f.boost_name.c_str());
  f.boost = std::make_unique<bip::managed_shared_memory>(bip::create_only,
                                                         f.boost_name.c_str(), 64 << 20);
  return absl::OkStatus();
}

// ---- load ----
void BM_Load_RawAtomic(benchmark::State& state) {
  std::atomic<uint64_t>* p = g->raw;
  for (auto _ : state) benchmark::DoNotOptimize(p->load(std::memory_order_relaxed));
}
BENCHMARK(BM_Load_RawAtomic);

void BM_Load_Field(benchmark::State& state) {
  auto hits = g->counter->hits();
  for (auto _ : state) benchmark::DoNotOptimize(hits.load());
}
BENCHMARK(BM_Load_Field);

void BM_Load_RawAtomicReloaded(benchmark::State& state) {
  std::atomic<uint64_t>* p = g->raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    benchmark::DoNotOptimize(p->load(std::memory_order_relaxed));
  }
}
BENCHMARK(BM_Load_RawAtomicReloaded);

void BM_Load_ViewEachIter(benchmark::State& state) {
  BenchCounter view = g->counter.get();
  for (auto _ : state) {
    benchmark::DoNotOptimize(view);
    benchmark::DoNotOptimize(view.hits().load());
  }
}
BENCHMARK(BM_Load_ViewEachIter);

// ---- store ----
void BM_Store_RawAtomic(benchmark::State& state) {
  std::atomic<uint64_t>* p = g->raw;
  uint64_t v = 0;
  for (auto _ : state) {
    p->store(++v, std::memory_order_relaxed);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Store_RawAtomic);

void BM_Store_Field(benchmark::State& state) {
  auto hits = g->counter->hits();
  uint64_t v = 0;
  for (auto _ : state) {
    hits.store(++v);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Store_Field);

void BM_Store_RawAtomicReloaded(benchmark::State& state) {
  std::atomic<uint64_t>* p = g->raw;
  uint64_t v = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    p->store(++v, std::memory_order_relaxed);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Store_RawAtomicReloaded);

void BM_Store_ViewEachIter(benchmark::State& state) {
  BenchCounter view = g->counter.get();
  uint64_t v = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(view);
    view.hits().store(++v);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Store_ViewEachIter);

// ---- fetch_add ----
void BM_FetchAdd_RawAtomic(benchmark::State& state) {
  std::atomic<uint64_t>* p = g->raw;
  for (auto _ : state) benchmark::DoNotOptimize(p->fetch_add(1, std::memory_order_relaxed));
}
BENCHMARK(BM_FetchAdd_RawAtomic);

void BM_FetchAdd_Field(benchmark::State& state) {
  auto hits = g->counter->hits();
  for (auto _ : state) benchmark::DoNotOptimize(hits.fetch_add(1));
}
BENCHMARK(BM_FetchAdd_Field);

void BM_FetchAdd_RawAtomicReloaded(benchmark::State& state) {
  std::atomic<uint64_t>* p = g->raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    benchmark::DoNotOptimize(p->fetch_add(1, std::memory_order_relaxed));
  }
}
BENCHMARK(BM_FetchAdd_RawAtomicReloaded);

void BM_FetchAdd_ViewEachIter(benchmark::State& state) {
  BenchCounter view = g->counter.get();
  for (auto _ : state) {
    benchmark::DoNotOptimize(view);
    benchmark::DoNotOptimize(view.hits().fetch_add(1));
  }
}
BENCHMARK(BM_FetchAdd_ViewEachIter);

// ---- informational: resolving a ref into a typed view ----
void BM_ViewFromRef(benchmark::State& state) {
  client::Ref ref = g->counter.ref();
  for (auto _ : state) {
    auto view = g->ch().View<BenchCounter>(ref);
    if (!view.ok()) {
      state.SkipWithError("View failed");
      break;
    }
    benchmark::DoNotOptimize(view->hits().load());
  }
}
BENCHMARK(BM_ViewFromRef);

// CPU time the daemon has used so far, in microseconds (/proc/PID/stat).
double DaemonCpuUs() {
  std::ifstream in("/proc/" + std::to_string(g->daemon->pid()) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(f);  // utime, stime
  }
  return ticks * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Reports the daemon's CPU per 1,000 operations of the benchmark.
struct DaemonCpu {
  benchmark::State& state;
  double start = DaemonCpuUs();
  ~DaemonCpu() {
    double ops = static_cast<double>(state.iterations()) * state.range(0);
    if (ops > 0) state.counters["daemon_us_per_1k_ops"] = (DaemonCpuUs() - start) * 1000 / ops;
  }
};

// ---- the object lifecycle (issue 17) ----
// Clone() + drop of an Owned: queued (no call to the daemon on this
// thread; a background thread applies them in batches) versus two atomic
// read-modify-writes on one shared word, the cost of a refcount up and down.
void BM_CloneDrop(benchmark::State& state) {
  DaemonCpu cpu{state};
  for (auto _ : state) {
    auto copy = g->counter.Clone();
    benchmark::DoNotOptimize(copy);
  }
  (void)g->ch().Flush();
}
BENCHMARK(BM_CloneDrop)->Arg(1);

void BM_TwoFetchAdds(benchmark::State& state) {
  std::atomic<uint64_t>* p = g->raw;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p->fetch_add(1, std::memory_order_acq_rel));
    benchmark::DoNotOptimize(p->fetch_sub(1, std::memory_order_acq_rel));
  }
}
BENCHMARK(BM_TwoFetchAdds);

// N Owneds destroyed one by one, until the daemon has applied every
// release (Flush), versus handing the same N to Release(vector) in one
// call, as a program had to for speed before. Wall time of one round.
size_t DropCount() { return std::getenv("STRUCTD_BENCH_SMOKE") != nullptr ? 10000 : 1000000; }

// Times `drop` on DropCount() fresh Owneds (their allocation untimed).
template <typename Drop>
void TimeDrops(benchmark::State& state, Drop drop) {
  double daemon_us = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto batch = g->ch().AllocateBatch<BenchCounter>(static_cast<uint32_t>(DropCount()));
    if (!batch.ok()) {
      state.SkipWithError(batch.status().ToString().c_str());
      break;
    }
    double before = DaemonCpuUs();
    state.ResumeTiming();
    if (absl::Status s = drop(*batch); !s.ok()) state.SkipWithError(s.ToString().c_str());
    state.PauseTiming();
    daemon_us += DaemonCpuUs() - before;
    state.ResumeTiming();
  }
  double ops = static_cast<double>(state.iterations()) * static_cast<double>(DropCount());
  if (ops > 0) state.counters["daemon_us_per_1k_ops"] = daemon_us * 1000 / ops;
}

void BM_DropOneByOne(benchmark::State& state) {
  TimeDrops(state, [](std::vector<client::Owned<BenchCounter>>& batch) {
    batch.clear();  // each Owned's destructor
    return g->ch().Flush();
  });
}
BENCHMARK(BM_DropOneByOne)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_DropReleaseVector(benchmark::State& state) {
  TimeDrops(state, [](std::vector<client::Owned<BenchCounter>>& batch) {
    return g->ch().Release(batch);
  });
}
BENCHMARK(BM_DropReleaseVector)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// Allocate + drop of a 64-byte instance through the client API (from the
// process's stock; the drop queued), versus Boost.Interprocess allocate(64)
// + deallocate in a managed segment in this process. Wall time: the
// background refills and the daemon's work are the cost too.
#define BENCH_SIXTY_FOUR_FIELDS(F) \
  F(a, u64) F(b, u64) F(c, u64) F(d, u64) F(e, u64) F(f, u64) F(g, u64) F(h, u64)
STRUCTD_STRUCT(SixtyFour, BENCH_SIXTY_FOUR_FIELDS);

void BM_AllocateDrop(benchmark::State& state) {
  DaemonCpu cpu{state};
  for (auto _ : state) {
    auto one = g->ch().Allocate<SixtyFour>();
    if (!one.ok()) {
      state.SkipWithError(one.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(one->get().a().load());
  }
  (void)g->ch().Flush();
}
BENCHMARK(BM_AllocateDrop)->Arg(1)->UseRealTime();

void BM_Boost_AllocateDeallocate(benchmark::State& state) {
  bip::managed_shared_memory& segment = *g->boost;
  for (auto _ : state) {
    void* p = segment.allocate(64);
    benchmark::DoNotOptimize(p);
    segment.deallocate(p);
  }
}
BENCHMARK(BM_Boost_AllocateDeallocate)->UseRealTime();

constexpr Pair kPairs[] = {
    {"load (field)", "BM_Load_Field", "BM_Load_RawAtomic", "raw atomic", 2.0},
    {"load (view each iter)", "BM_Load_ViewEachIter", "BM_Load_RawAtomicReloaded",
     "raw atomic, ptr reloaded", 2.0},
    {"store (field)", "BM_Store_Field", "BM_Store_RawAtomic", "raw atomic", 2.0},
    {"store (view each iter)", "BM_Store_ViewEachIter", "BM_Store_RawAtomicReloaded",
     "raw atomic, ptr reloaded", 2.0},
    {"fetch_add (field)", "BM_FetchAdd_Field", "BM_FetchAdd_RawAtomic", "raw atomic", 2.0},
    {"fetch_add (view each iter)", "BM_FetchAdd_ViewEachIter",
     "BM_FetchAdd_RawAtomicReloaded", "raw atomic, ptr reloaded", 2.0},
    // Issue 17: resolving a checked ref within 10x of following a pointer.
    {"View<T>(ref) + load", "BM_ViewFromRef", "BM_Load_RawAtomicReloaded",
     "raw atomic, ptr reloaded", 10.0},
    {"Clone() + drop", "BM_CloneDrop/1", "BM_TwoFetchAdds", "two atomic RMWs", 3.0},
    {"1M Owned dropped one by one", "BM_DropOneByOne", "BM_DropReleaseVector",
     "Release(vector) of 1M", 0.0, true},
    {"Allocate + drop (64 B)", "BM_AllocateDrop/1", "BM_Boost_AllocateDeallocate",
     "Boost.Interprocess allocate+deallocate", 2.0, true},
};

}  // namespace
}  // namespace structd::bench

int main(int argc, char** argv) {
  using namespace structd::bench;
  Args args = SmokeArgs(argc, argv);
  const auto console_options = ConsoleOptions(args.count, args.argv.data());
  benchmark::Initialize(&args.count, args.argv.data());
  if (benchmark::ReportUnrecognizedArguments(args.count, args.argv.data())) return 1;
  auto fixture = std::make_unique<Fixture>();
  if (absl::Status s = SetUp(*fixture); !s.ok()) {
    std::fprintf(stderr, "client_bench: setup failed: %s\n", s.ToString().c_str());
    return 1;
  }
  g = fixture.get();
  CollectingReporter reporter(console_options);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  PrintRatios(reporter, kPairs);
  g = nullptr;
  fixture.reset();
  for (const std::string& e : reporter.errors()) {
    std::fprintf(stderr, "client_bench: error: %s\n", e.c_str());
  }
  return reporter.errors().empty() ? 0 : 1;
}
