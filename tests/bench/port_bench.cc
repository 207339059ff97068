// port_bench: handing a struct to another process through a Port<T> (issue
// 18), against the same hand-over through a Unix socket and through
// iceoryx, every figure measured in this one run on this machine; and
// Port<T> throughput from 1 producer to 1 consumer and 2 to 2. Method and
// latest figures: BENCHMARKS.md.
//
// The message is a 1 KiB struct of which the sender writes one 8-byte
// word and the receiver reads it back, for every contestant:
//   Port<T>      a ref moved between two processes' session records and
//                the port's ring (no daemon call per message);
//   Unix socket  the 8-byte ref written to a socketpair; the receiver
//                views the struct through it;
//   iceoryx      a 1 KiB chunk loaned, written, published and taken
//                (iceoryx 2.0 from Debian, RouDi started by this program
//                with a config of its own in a temp dir).
// A round trip is a ping and a pong; one way is half of it. "spin": the
// receiver polls (a core each); "blocking": it sleeps in the kernel
// (futex, socket read, iceoryx's WaitSet) until the message comes.
//
// Each iteration of a round-trip benchmark is the mean of kRounds round
// trips (manual time), so every contestant is measured the same way: the
// iceoryx side runs in child processes (RouDi sends SIGTERM to registered
// processes when it stops, so this program never registers).

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/popo/publisher.hpp"
#include "iceoryx_posh/popo/subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/client/port.h"
#include "tests/bench/bench_daemon.h"
#include "tests/bench/bench_io.h"
#include "tests/bench/bench_report.h"
#include "testing/spawned_process.h"
#include "testing/temp_dir.h"

namespace structd::bench {
namespace {

// 1 KiB: the sequence number, then a body nobody reads.
#define KB_MESSAGE_FIELDS(F) F(seq, u64) F(body, array(u8, 1016))
STRUCTD_STRUCT(KbMessage, KB_MESSAGE_FIELDS);

// iceoryx's message: the same 1 KiB.
struct IoxKbMessage {
  uint64_t seq;
  uint8_t body[1016];
};
static_assert(sizeof(IoxKbMessage) == 1024);

using client::Ref;

std::string g_self;
bool g_smoke = false;
// Round trips averaged per iteration, and iterations per benchmark.
int Rounds() { return g_smoke ? 20 : 500; }
constexpr int kIterations = 20;
// A spinning receiver polls this many times before it sleeps: long enough
// that it never sleeps while the other side is answering.
constexpr uint32_t kSpin = 1u << 30;
constexpr auto kTimeout = std::chrono::seconds(10);

struct Fixture : BenchDaemon {
  testing::TempDir dir;
  std::unique_ptr<testing::SpawnedProcess> roudi;
};
Fixture* g = nullptr;

// ---------------------------------------------------------------------------
// RouDi, iceoryx's daemon, with a mempool for 1 KiB chunks only.

absl::Status StartRouDi(Fixture& f) {
  const std::string config = f.dir.Sub("roudi.toml");
  const std::string log = f.dir.Sub("roudi.log");
  std::ofstream(config) << "[general]\nversion = 1\n\n[[segment]]\n\n"
                           "[[segment.mempool]]\nsize = 1024\ncount = 512\n";
  // Its output goes to a file, not a pipe nobody reads once it is ready.
  f.roudi = std::make_unique<testing::SpawnedProcess>(std::vector<std::string>{
      "/bin/sh", "-c",
      "exec /usr/bin/iox-roudi -c '" + config + "' -m off -l info >'" + log + "' 2>&1"});
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  std::string said;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(log);
    said.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (said.find("RouDi is ready for clients") != std::string::npos) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::UnavailableError(
      "iox-roudi did not say it was ready within 10 s (another RouDi running? apt install "
      "iceoryx); it said: " + said.substr(said.size() > 500 ? said.size() - 500 : 0));
}

// The next line of `p`'s that starts with `prefix`, without it (none after
// kTimeout or at EOF): libraries may print lines of their own.
std::optional<std::string> LineStartingWith(testing::SpawnedProcess& p,
                                            const std::string& prefix) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    const std::string line = p.ReadLine(left);
    if (line.empty()) return std::nullopt;
    if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
  }
}

// ---------------------------------------------------------------------------
// Child processes. argv: MODE ...

// Port echo: receives from "ping", sends it back to "pong"; seq 0 stops.
// argv: port-echo SOCKET CHANNEL CAPABILITY SPIN
int PortEcho(char** argv) {
  std::optional<ChildSession> ch = JoinFromArgs(argv);
  if (!ch) return 3;
  const uint32_t spin = std::atoi(argv[5]) != 0 ? kSpin : 0;
  auto ping = (*ch)->OpenPort<KbMessage>("ping");
  auto pong = (*ch)->OpenPort<KbMessage>("pong");
  if (!ping.ok() || !pong.ok()) return 3;
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) {
    auto got = ping->Receive(kTimeout, spin);
    if (!got.ok()) return 4;
    if ((*got)->seq().load() == 0) return 0;
    if (!pong->Send(*got).ok()) return 4;
  }
}

// Socket echo: reads a ref, views the struct, reads its seq, writes the
// ref back. argv: socket-echo SOCKET CHANNEL CAPABILITY FD
int SocketEcho(char** argv) {
  std::optional<ChildSession> ch = JoinFromArgs(argv);
  if (!ch) return 3;
  const int fd = std::atoi(argv[5]);
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) {
    uint64_t bits = 0;
    if (!ReadAll(fd, &bits, 8)) return 0;
    auto view = (*ch)->View<KbMessage>(Ref::FromBits(bits));
    if (!view.ok() || view->seq().load() == 0) return 4;
    if (!WriteAll(fd, &bits, 8)) return 0;
  }
}

// iceoryx: the receiving side of one round trip, spinning on take() or
// asleep in a WaitSet.
template <typename Subscriber>
std::optional<uint64_t> IoxTake(Subscriber& sub, iox::popo::WaitSet<>* waitset) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  for (;;) {
    std::optional<uint64_t> seq;
    sub.take().and_then([&](auto& sample) { seq = sample->seq; });
    if (seq) return seq;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    if (waitset != nullptr) {
      (void)waitset->timedWait(iox::units::Duration::fromSeconds(1));
    }
  }
}

template <typename Publisher>
bool IoxSend(Publisher& pub, uint64_t seq) {
  bool sent = false;
  pub.loan().and_then([&](auto& sample) {
    sample->seq = seq;
    sample.publish();
    sent = true;
  });
  return sent;
}

template <typename Publisher, typename Subscriber>
bool IoxMatched(Publisher& pub, Subscriber& sub) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (!pub.hasSubscribers() || sub.getSubscriptionState() != iox::SubscribeState::SUBSCRIBED) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// argv: iox-echo SPIN | iox-lead SPIN ITERATIONS ROUNDS. The leader prints
// "ready", then one line per iteration: "round trip NS", the mean.
int Iceoryx(char** argv) {
  const bool lead = std::string(argv[1]) == "iox-lead";
  const bool spin = std::atoi(argv[2]) != 0;
  const std::string name =
      std::string("structd-bench-") + (lead ? "lead-" : "echo-") + std::to_string(getpid());
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn);
  iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name));
  iox::popo::Publisher<IoxKbMessage> pub({"structd-bench", lead ? "ping" : "pong", "kb"});
  iox::popo::Subscriber<IoxKbMessage> sub({"structd-bench", lead ? "pong" : "ping", "kb"});
  std::unique_ptr<iox::popo::WaitSet<>> waitset;
  if (!spin) {
    waitset = std::make_unique<iox::popo::WaitSet<>>();
    if (waitset->attachState(sub, iox::popo::SubscriberState::HAS_DATA).has_error()) return 3;
  }
  if (!IoxMatched(pub, sub)) return 5;
  if (!lead) {
    for (;;) {
      std::optional<uint64_t> seq = IoxTake(sub, waitset.get());
      if (!seq) return 4;
      if (*seq == 0 || !IoxSend(pub, *seq)) return *seq == 0 ? 0 : 4;
    }
  }
  const int iterations = std::atoi(argv[3]);
  const int rounds = std::atoi(argv[4]);
  std::printf("ready\n");
  std::fflush(stdout);
  uint64_t seq = 1;
  for (int i = 0; i < iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r, ++seq) {
      if (!IoxSend(pub, seq)) return 6;
      std::optional<uint64_t> back = IoxTake(sub, waitset.get());
      if (!back || *back != seq) return 7;
    }
    const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
    std::printf("round trip %.1f\n", took.count() / rounds);
    std::fflush(stdout);
  }
  (void)IoxSend(pub, 0);  // the echo's "stop"
  return 0;
}

// Throughput: a producer allocates and sends COUNT messages; a consumer
// receives and drops until seq 0. Both wait on the parent's "go" byte.
// argv: port-producer SOCKET CHANNEL CAPABILITY COUNT GO_FD
//       port-consumer SOCKET CHANNEL CAPABILITY COUNT GO_FD
int PortFlow(char** argv) {
  const bool producer = std::string(argv[1]) == "port-producer";
  std::optional<ChildSession> ch = JoinFromArgs(argv);
  if (!ch) return 3;
  const long count = std::atol(argv[5]);
  auto flow = (*ch)->OpenPort<KbMessage>("flow");
  if (!flow.ok()) return 3;
  std::printf("ready\n");
  std::fflush(stdout);
  char go;
  if (read(std::atoi(argv[6]), &go, 1) != 1) return 5;
  if (producer) {
    for (long i = 1; i <= count; ++i) {
      auto m = (*ch)->Allocate<KbMessage>();
      if (!m.ok()) return 6;
      (*m)->seq().store(static_cast<uint64_t>(i));
      if (!flow->Send(*m, kTimeout).ok()) return 7;
    }
    return 0;
  }
  for (;;) {
    auto got = flow->Receive(kTimeout);
    if (!got.ok()) return 8;
    if ((*got)->seq().load() == 0) return 0;
  }
}

// ---------------------------------------------------------------------------
// Round trips.

// One iteration: kRounds round trips through `round_trip`, the mean as the
// iteration's time.
template <typename RoundTrip>
void MeasureRounds(benchmark::State& state, RoundTrip round_trip) {
  const int rounds = Rounds();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r) {
      if (!round_trip()) return state.SkipWithError("hand-over failed");
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(took.count() / rounds);
  }
}

// Arg: 1 spin, 0 blocking.
void BM_RoundTrip_Port(benchmark::State& state) {
  const bool spin = state.range(0) != 0;
  client::Channel& ch = g->ch();
  auto ping = ch.OpenPort<KbMessage>("ping");
  auto pong = ch.OpenPort<KbMessage>("pong");
  if (!ping.ok() || !pong.ok()) return state.SkipWithError("open ports");
  testing::SpawnedProcess echo(std::vector<std::string>{g_self, "port-echo", g->daemon->socket(),
                                                        "bench", g->created.member_capability,
                                                        spin ? "1" : "0"});
  if (echo.ReadLine(kTimeout) != "ready") return state.SkipWithError("echo did not start");
  auto message = ch.Allocate<KbMessage>();
  if (!message.ok()) return state.SkipWithError("allocate");
  uint64_t seq = 0;
  MeasureRounds(state, [&] {
    (*message)->seq().store(++seq);
    if (!ping->Send(*message).ok()) return false;
    auto back = pong->Receive(kTimeout, spin ? kSpin : 0);
    if (!back.ok() || (*back)->seq().load() != seq) return false;
    *message = std::move(*back);
    return true;
  });
  (*message)->seq().store(0);
  (void)ping->Send(*message);
  if (echo.Wait() != 0) state.SkipWithError("the echo failed");
}
BENCHMARK(BM_RoundTrip_Port)->Arg(0)->Arg(1)->Iterations(kIterations)->UseManualTime();

void BM_RoundTrip_UnixSocket(benchmark::State& state) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return state.SkipWithError("socketpair");
  fcntl(sv[0], F_SETFD, FD_CLOEXEC);  // ours; the echo inherits sv[1]
  testing::SpawnedProcess echo(std::vector<std::string>{g_self, "socket-echo",
                                                        g->daemon->socket(), "bench",
                                                        g->created.member_capability,
                                                        std::to_string(sv[1])});
  close(sv[1]);
  const int fd = sv[0];
  if (echo.ReadLine(kTimeout) != "ready") {
    close(fd);
    return state.SkipWithError("echo did not start");
  }
  auto message = g->ch().Allocate<KbMessage>();
  if (!message.ok()) return state.SkipWithError("allocate");
  const uint64_t bits = message->ref().bits();
  uint64_t seq = 0;
  MeasureRounds(state, [&] {
    (*message)->seq().store(++seq);
    uint64_t back = 0;
    return WriteAll(fd, &bits, 8) && ReadAll(fd, &back, 8) && back == bits;
  });
  close(fd);  // the echo's "stop"
  if (echo.Wait() != 0) state.SkipWithError("the echo failed");
}
BENCHMARK(BM_RoundTrip_UnixSocket)->Iterations(kIterations)->UseManualTime();

// Arg: 1 spin, 0 blocking.
void BM_RoundTrip_Iceoryx(benchmark::State& state) {
  if (!g->roudi) {
    if (absl::Status s = StartRouDi(*g); !s.ok()) {
      return state.SkipWithError(s.ToString().c_str());
    }
  }
  const std::string spin = state.range(0) != 0 ? "1" : "0";
  testing::SpawnedProcess echo(std::vector<std::string>{g_self, "iox-echo", spin});
  testing::SpawnedProcess lead(std::vector<std::string>{
      g_self, "iox-lead", spin, std::to_string(state.max_iterations), std::to_string(Rounds())});
  if (!LineStartingWith(lead, "ready")) return state.SkipWithError("iceoryx did not match");
  for (auto _ : state) {
    const std::optional<std::string> ns = LineStartingWith(lead, "round trip ");
    if (!ns) return state.SkipWithError("the iceoryx leader failed");
    state.SetIterationTime(std::atof(ns->c_str()) * 1e-9);
  }
  if (lead.Wait() != 0 || echo.Wait() != 0) state.SkipWithError("an iceoryx process failed");
}
BENCHMARK(BM_RoundTrip_Iceoryx)->Arg(0)->Arg(1)->Iterations(kIterations)->UseManualTime();

// ---------------------------------------------------------------------------
// Throughput: {producers, consumers}; messages per second in the counters.

void BM_Throughput_Port(benchmark::State& state) {
  const int producers = static_cast<int>(state.range(0));
  const int consumers = static_cast<int>(state.range(1));
  const long per_producer = g_smoke ? 2000 : 200000;
  client::Channel& ch = g->ch();
  auto flow = ch.OpenPort<KbMessage>("flow");
  if (!flow.ok()) return state.SkipWithError("open port");
  for (auto _ : state) {
    int go[2];
    if (pipe(go) != 0) return state.SkipWithError("pipe");
    fcntl(go[1], F_SETFD, FD_CLOEXEC);
    std::vector<std::unique_ptr<testing::SpawnedProcess>> senders, receivers;
    auto spawn = [&](const char* mode) {
      return std::make_unique<testing::SpawnedProcess>(std::vector<std::string>{
          g_self, mode, g->daemon->socket(), "bench", g->created.member_capability,
          std::to_string(per_producer), std::to_string(go[0])});
    };
    for (int i = 0; i < producers; ++i) senders.push_back(spawn("port-producer"));
    for (int i = 0; i < consumers; ++i) receivers.push_back(spawn("port-consumer"));
    close(go[0]);
    bool ready = true;
    for (auto& p : senders) ready = ready && p->ReadLine(kTimeout) == "ready";
    for (auto& p : receivers) ready = ready && p->ReadLine(kTimeout) == "ready";
    const std::string go_bytes(senders.size() + receivers.size(), 'g');
    const auto start = std::chrono::steady_clock::now();
    ready = WriteAll(go[1], go_bytes.data(), go_bytes.size()) && ready;
    close(go[1]);
    if (!ready) return state.SkipWithError("a flow process did not start");
    bool ok = true;
    for (auto& p : senders) ok = p->Wait(std::chrono::minutes(5)) == 0 && ok;
    for (int i = 0; i < consumers && ok; ++i) {
      auto stop = ch.Allocate<KbMessage>();
      ok = stop.ok() && flow->Send(*stop, kTimeout).ok();
    }
    for (auto& p : receivers) ok = p->Wait(std::chrono::minutes(5)) == 0 && ok;
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    if (!ok) return state.SkipWithError("a flow process failed");
    state.SetIterationTime(took.count());
    state.counters["msgs_per_s"] = static_cast<double>(per_producer * producers) / took.count();
  }
  state.SetItemsProcessed(state.iterations() * per_producer * producers);
}
BENCHMARK(BM_Throughput_Port)
    ->Args({1, 1})
    ->Args({2, 2})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

constexpr Pair kPairs[] = {
    {"hand-over round trip, blocking: Port<T> vs iceoryx (goal: faster)",
     "BM_RoundTrip_Port/0", "BM_RoundTrip_Iceoryx/0", "iceoryx", 1.0, true},
    {"hand-over round trip, spinning: Port<T> vs iceoryx", "BM_RoundTrip_Port/1",
     "BM_RoundTrip_Iceoryx/1", "iceoryx", 0, true},
    {"hand-over round trip, blocking: Port<T> vs a ref over a Unix socket",
     "BM_RoundTrip_Port/0", "BM_RoundTrip_UnixSocket", "Unix socket", 0, true},
};

absl::Status SetUp(Fixture& f) {
  if (absl::Status s = f.Start("bench"); !s.ok()) return s;
  for (auto [name, capacity] : {std::pair{"ping", 64u}, {"pong", 64u}, {"flow", 1024u}}) {
    if (absl::Status s = f.ch().CreatePort(name, capacity).status(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace structd::bench

int main(int argc, char** argv) {
  using namespace structd::bench;
  g_self = std::filesystem::canonical("/proc/self/exe").string();
  if (argc >= 2) {
    const std::string mode = argv[1];
    if (mode == "port-echo" && argc == 6) return PortEcho(argv);
    if (mode == "socket-echo" && argc == 6) return SocketEcho(argv);
    if (mode == "iox-echo" && argc == 3) return Iceoryx(argv);
    if (mode == "iox-lead" && argc == 5) return Iceoryx(argv);
    if ((mode == "port-producer" || mode == "port-consumer") && argc == 7) return PortFlow(argv);
  }
  const char* smoke = std::getenv("STRUCTD_BENCH_SMOKE");
  g_smoke = smoke != nullptr && std::string(smoke) == "1";
  Args args = SmokeArgs(argc, argv);
  const auto options = InitializeBenchmarks(args);
  if (!options) return 1;
  signal(SIGPIPE, SIG_IGN);
  auto fixture = std::make_unique<Fixture>();
  if (absl::Status s = SetUp(*fixture); !s.ok()) {
    std::fprintf(stderr, "port_bench: setup failed: %s\n", s.ToString().c_str());
    return 1;
  }
  g = fixture.get();
  const int rc = RunBenchmarks("port_bench", *options, kPairs, [](const CollectingReporter& r) {
    for (const bool spin : {false, true}) {
      const auto round_trip = r.NsPerOp(spin ? "BM_RoundTrip_Port/1" : "BM_RoundTrip_Port/0", true);
      if (!round_trip) continue;
      std::printf("Port<T> one-way hand-over, %s: %.0f ns (half a round trip)%s\n",
                  spin ? "spinning" : "blocking", *round_trip / 2,
                  !spin ? "" : *round_trip / 2 < 1000 ? " (goal < 1000 ns) OK"
                                                      : " (goal < 1000 ns) MISS");
    }
  });
  g = nullptr;
  fixture.reset();
  return rc;
}
