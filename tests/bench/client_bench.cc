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

#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <vector>
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

// The daemon's RssAnon (anonymous resident memory: its own heap, not the
// arena), in KiB, from /proc/PID/status.
double DaemonRssAnonKib() {
  std::ifstream in("/proc/" + std::to_string(g->daemon->pid()) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stod(line.substr(8));
  }
  return 0;
}

// Reports the daemon's CPU per 1,000 operations of the benchmark, and how
// much its RssAnon grew meanwhile.
struct DaemonCpu {
  benchmark::State& state;
  double start = DaemonCpuUs();
  double rss_start = DaemonRssAnonKib();
  ~DaemonCpu() {
    double ops = static_cast<double>(state.iterations()) * state.range(0);
    if (ops > 0) state.counters["daemon_us_per_1k_ops"] = (DaemonCpuUs() - start) * 1000 / ops;
    state.counters["daemon_rss_growth_kib"] = DaemonRssAnonKib() - rss_start;
  }
};

// ---- the object lifecycle (issue 17) ----
// Clone() + drop of an Owned (an increment and a decrement of the clone
// group's count in this process; the daemon is not involved) versus two
// atomic read-modify-writes on one shared word, the cost of a refcount up
// and down.
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

// ---- a hand-over between processes ----
// This process creates N instances, writes a value into each and hands its
// ref to a consumer process through a ring in shared memory; the consumer
// takes a reference of its own, reads the value and drops the instance.
// structd: Allocate<T> (from the stock), the consumer's RetainBatch (one
// call per up to 1,024 refs), Owned drops on both sides (queued, applied in
// batches: the instance is freed by the daemon once both are applied).
// Boost.Interprocess: construct<T>(anonymous_instance) in a managed segment,
// the handle through the same ring, destroy_ptr in the consumer. Wall time
// of one round of N, the consumer's start-up excluded.
struct Payload {
  uint64_t a, b, c, d, e, f, g, h;
};

struct HandoverRing {
  static constexpr uint64_t kSlots = 8192;
  alignas(64) std::atomic<uint64_t> published{0};  // by the producer
  alignas(64) std::atomic<uint64_t> taken{0};      // by the consumer: read and owned
  alignas(64) std::atomic<uint64_t> finished{0};   // by the consumer: all dropped
  std::atomic<uint64_t> checksum{0};
  std::atomic<uint32_t> ready{0};
  std::atomic<uint32_t> failed{0};
  uint64_t slots[kSlots];
};

uint64_t HandoverCount() {
  return std::getenv("STRUCTD_BENCH_SMOKE") != nullptr ? 10000 : 1000000;
}

// Waits until `done` or 120 s; false on the timeout.
template <typename F>
bool WaitFor(F done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// The consumer's side; runs in the process client_bench starts with
// --handover-consumer MODE RING_FD SOCKET CHANNEL CAPABILITY BOOST_NAME N.
int HandoverConsumer(char** argv) {
  const std::string mode = argv[2];
  auto* ring = static_cast<HandoverRing*>(mmap(nullptr, sizeof(HandoverRing),
                                               PROT_READ | PROT_WRITE, MAP_SHARED,
                                               std::atoi(argv[3]), 0));
  if (ring == MAP_FAILED) return 2;
  const uint64_t n = std::strtoull(argv[8], nullptr, 10);
  uint64_t sum = 0;
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "handover consumer: %s\n", why.c_str());
    ring->failed.store(1);
    return 1;
  };
  if (mode == "structd") {
    client::ClientOptions o;
    o.socket = argv[4];
    auto c = client::Client::Connect(o);
    if (!c.ok()) return fail(c.status().ToString());
    auto ch = (*c)->Join(argv[5], argv[6]);
    if (!ch.ok()) return fail(ch.status().ToString());
    if (auto t = (*ch)->Use<SixtyFour>(); !t.ok()) return fail(t.status().ToString());
    ring->ready.store(1, std::memory_order_release);
    std::vector<client::Ref> batch;
    for (uint64_t next = 0; next < n;) {
      uint64_t published = ring->published.load(std::memory_order_acquire);
      if (published == next) {
        std::this_thread::yield();
        continue;
      }
      const uint64_t end = std::min(published, next + 1024);
      batch.clear();
      for (uint64_t i = next; i < end; ++i) {
        batch.push_back(client::Ref::FromBits(ring->slots[i % HandoverRing::kSlots]));
      }
      auto owned = (*ch)->RetainBatch<SixtyFour>(batch);
      if (!owned.ok()) return fail(owned.status().ToString());
      ring->taken.store(end, std::memory_order_release);
      for (const auto& one : *owned) sum += one->a().load();
      next = end;
    }  // each batch of Owneds is dropped as it goes out of scope
    if (absl::Status s = (*ch)->Flush(); !s.ok()) return fail(s.ToString());
  } else {
    bip::managed_shared_memory segment(bip::open_only, argv[7]);
    ring->ready.store(1, std::memory_order_release);
    for (uint64_t next = 0; next < n;) {
      uint64_t published = ring->published.load(std::memory_order_acquire);
      if (published == next) {
        std::this_thread::yield();
        continue;
      }
      for (; next < published; ++next) {
        auto* p = static_cast<Payload*>(
            segment.get_address_from_handle(ring->slots[next % HandoverRing::kSlots]));
        sum += p->a;
        segment.destroy_ptr(p);
      }
      ring->taken.store(next, std::memory_order_release);
    }
  }
  ring->checksum.store(sum);
  ring->finished.store(n, std::memory_order_release);
  return 0;
}

// Starts the consumer in `mode` on a fresh ring, runs `produce(ring)` timed,
// and checks what the consumer saw.
template <typename Produce>
void TimeHandover(benchmark::State& state, const char* mode, Produce produce) {
  const uint64_t n = HandoverCount();
  for (auto _ : state) {
    state.PauseTiming();
    int fd = memfd_create("structd-handover", 0);  // inherited by the consumer
    HandoverRing* ring = nullptr;
    if (fd >= 0 && ftruncate(fd, sizeof(HandoverRing)) == 0) {
      void* p = mmap(nullptr, sizeof(HandoverRing), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) ring = new (p) HandoverRing();
    }
    if (ring == nullptr) {
      state.SkipWithError("handover: no shared ring");
      if (fd >= 0) close(fd);
      break;
    }
    const std::string fd_text = std::to_string(fd), n_text = std::to_string(n);
    std::vector<std::string> args = {"client_bench",        "--handover-consumer",
                                     mode,                  fd_text,
                                     g->daemon->socket(),   g->ch().id(),
                                     g->created.member_capability, g->boost_name,
                                     n_text};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    bool started = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(),
                               environ) == 0 &&
                   WaitFor([&] { return ring->ready.load() != 0 || ring->failed.load() != 0; });
    double daemon_before = DaemonCpuUs();
    double rss_before = DaemonRssAnonKib();
    state.ResumeTiming();
    bool ok = started && ring->failed.load() == 0 && produce(*ring, n) &&
              WaitFor([&] { return ring->finished.load() == n || ring->failed.load() != 0; });
    state.PauseTiming();
    const double daemon_us = DaemonCpuUs() - daemon_before;
    int status = 0;
    if (pid > 0) {
      if (!ok) kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    const uint64_t want = n * (n + 1) / 2;
    if (!ok || ring->failed.load() != 0 || ring->checksum.load() != want) {
      state.SkipWithError("handover: the consumer failed or saw wrong values");
    } else {
      state.counters["instances_per_s"] = benchmark::Counter(
          static_cast<double>(n), benchmark::Counter::kIsRate);
      state.counters["daemon_us_per_1k_ops"] = daemon_us * 1000 / static_cast<double>(n);
      state.counters["daemon_rss_growth_kib"] = DaemonRssAnonKib() - rss_before;
    }
    munmap(ring, sizeof(HandoverRing));
    close(fd);
    state.ResumeTiming();
  }
}

void BM_Handover_Structd(benchmark::State& state) {
  TimeHandover(state, "structd", [](HandoverRing& ring, uint64_t n) {
    // Each Owned is kept until the consumer has one of its own; a ring
    // slot is reused only after that, and the move drops the old one.
    std::vector<client::Owned<SixtyFour>> mine(HandoverRing::kSlots);
    for (uint64_t i = 0; i < n; ++i) {
      auto one = g->ch().Allocate<SixtyFour>();
      if (!one.ok()) return false;
      (*one)->a().store(i + 1);
      if (!WaitFor([&] { return i - ring.taken.load(std::memory_order_acquire) <
                                HandoverRing::kSlots; })) {
        return false;
      }
      ring.slots[i % HandoverRing::kSlots] = one->ref().bits();
      mine[i % HandoverRing::kSlots] = std::move(*one);
      ring.published.store(i + 1, std::memory_order_release);
    }
    if (!WaitFor([&] { return ring.taken.load() == n || ring.failed.load() != 0; })) return false;
    mine.clear();
    return g->ch().Flush().ok();
  });
}
BENCHMARK(BM_Handover_Structd)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Handover_Boost(benchmark::State& state) {
  TimeHandover(state, "boost", [](HandoverRing& ring, uint64_t n) {
    bip::managed_shared_memory& segment = *g->boost;
    for (uint64_t i = 0; i < n; ++i) {
      if (!WaitFor([&] { return i - ring.taken.load(std::memory_order_acquire) <
                                HandoverRing::kSlots; })) {
        return false;
      }
      Payload* p = segment.construct<Payload>(bip::anonymous_instance)();
      p->a = i + 1;
      ring.slots[i % HandoverRing::kSlots] = segment.get_handle_from_address(p);
      ring.published.store(i + 1, std::memory_order_release);
    }
    return true;
  });
}
BENCHMARK(BM_Handover_Boost)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

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
    {"1M instances handed to another process", "BM_Handover_Structd", "BM_Handover_Boost",
     "Boost.Interprocess construct/destroy", 0.0, true},
};

}  // namespace
}  // namespace structd::bench

int main(int argc, char** argv) {
  using namespace structd::bench;
  if (argc == 9 && std::string_view(argv[1]) == "--handover-consumer") {
    return HandoverConsumer(argv);
  }
  Args args = SmokeArgs(argc, argv);
  const auto options = InitializeBenchmarks(args);
  if (!options) return 1;
  auto fixture = std::make_unique<Fixture>();
  if (absl::Status s = SetUp(*fixture); !s.ok()) {
    std::fprintf(stderr, "client_bench: setup failed: %s\n", s.ToString().c_str());
    return 1;
  }
  g = fixture.get();
  const int rc = RunBenchmarks("client_bench", *options, kPairs);
  g = nullptr;
  fixture.reset();
  return rc;
}
