// The daemon's Prometheus metrics: scraped over loopback HTTP and through
// Admin.GetMetrics, checked with promtool, and scraped by a real
// Prometheus server (Debian's `prometheus` package, installed by
// deploy/scripts/install-deps.sh) that answers a query.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/client/admin.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "testing/child_process.h"
#include "testing/client_connect.h"
#include "testing/client_types.h"
#include "testing/daemon_process.h"
#include "testing/spawned_process.h"
#include "testing/temp_dir.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;
using client::Channel;

// A loopback TCP port nobody listens on now (the kernel's pick for port 0).
int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// GET `path` from 127.0.0.1:`port` (HTTP/1.0); the body, or nullopt.
std::optional<std::string> HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return std::nullopt;
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return std::nullopt;
  }
  std::string response;
  char buf[8192];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) response.append(buf, static_cast<size_t>(n));
  close(fd);
  size_t body = response.find("\r\n\r\n");
  if (!response.starts_with("HTTP/1.") || response.find(" 200 ") == std::string::npos ||
      body == std::string::npos) {
    return std::nullopt;
  }
  return response.substr(body + 4);
}

// The value of the sample whose name and labels are exactly `series`
// (e.g. `structd_channels` or `structd_channel_live_instances{channel="m"}`),
// or -1 if there is none.
double Sample(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(series + " ")) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

// The sum of every sample of `name` whose label text contains `needle`.
double SumOf(const std::string& exposition, const std::string& name, const std::string& needle) {
  std::istringstream in(exposition);
  std::string line;
  double sum = 0;
  while (std::getline(in, line)) {
    if (line.starts_with(name + "{") && line.find(needle) != std::string::npos) {
      sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return sum;
}

class MetricsTest : public ::testing::Test {
 protected:
  MetricsTest()
      : port_(FreeLoopbackPort()),
        daemon_({"--metrics-listen", "127.0.0.1:" + std::to_string(port_)}) {}

  // Retried for up to 5 s: the first request can find the endpoint's
  // worker threads not yet serving (seen once under a loaded CI run).
  std::string Scrape() {
    std::optional<std::string> body = HttpGet(port_, "/metrics");
    for (int i = 0; i < 50 && !body; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      body = HttpGet(port_, "/metrics");
    }
    EXPECT_TRUE(body.has_value()) << "no answer on 127.0.0.1:" << port_;
    return body.value_or("");
  }

  int port_;
  DaemonProcess daemon_;
};

TEST_F(MetricsTest, ValuesMoveWithAllocationsErrorsAndClientDeaths) {
  const std::string before = Scrape();
  EXPECT_EQ(Sample(before, "structd_channels"), 0);
  EXPECT_GT(Sample(before, "structd_uptime_seconds"), 0);
  EXPECT_GT(Sample(before, "structd_process_anon_memory_bytes"), 0);

  auto me = ConnectTo(daemon_);
  ASSERT_NE(me, nullptr);
  auto created = me->CreateChannel("m");
  ASSERT_TRUE(created.ok()) << created.status();
  Channel& ch = *created->channel;
  std::vector<client::Owned<Counter>> mine;
  for (int i = 0; i < 100; ++i) {
    auto one = ch.Allocate<Counter>();
    ASSERT_TRUE(one.ok()) << one.status();
    mine.push_back(std::move(*one));
  }
  // The stock (spares) is live instances too, and refills in the
  // background: give it back so the count is exactly ours.
  ch.ReleaseSpares();
  const double live = 100;
  std::string after = Scrape();
  for (int i = 0; i < 500 && Sample(after, "structd_channel_live_instances{channel=\"m\"}") != live;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    after = Scrape();
  }
  EXPECT_EQ(Sample(after, "structd_channels"), 1);
  EXPECT_EQ(Sample(after, "structd_sessions"), 1);
  EXPECT_EQ(Sample(after, "structd_session_attaches_total"), 1);
  EXPECT_EQ(Sample(after, "structd_channel_live_instances{channel=\"m\"}"), live);
  EXPECT_EQ(Sample(after, "structd_type_live_instances{channel=\"m\",type=\"Counter\"}"), live);
  EXPECT_GT(Sample(after, "structd_type_live_bytes{channel=\"m\",type=\"Counter\"}"), 0);
  EXPECT_GT(Sample(after, "structd_channel_arena_bytes{channel=\"m\"}"), 0);
  EXPECT_GE(SumOf(after, "structd_rpcs_total", "method=\"/structd.v1.Registry/CreateChannel\""), 1);
  EXPECT_GE(SumOf(after, "structd_rpc_duration_seconds_count",
                  "method=\"/structd.v1.Registry/CreateChannel\""),
            1);
  EXPECT_EQ(SumOf(after, "structd_rpcs_total", "code=\"NOT_FOUND\""), 0);

  // An error: joining a channel that does not exist.
  EXPECT_FALSE(me->Join("no-such-channel", "x").ok());
  after = Scrape();
  EXPECT_GE(SumOf(after, "structd_rpcs_total",
                  "code=\"NOT_FOUND\",method=\"/structd.v1.Registry/JoinChannel\""),
            1)
      << after;

  // A client killed with references: released, counted.
  SpawnedProcess holder({STRUCTD_TEST_CLIENT, "hold", daemon_.socket(), "m",
                         created->member_capability, "50", "g"});
  auto guarded = ch.Allocate<Guarded>();
  ASSERT_TRUE(guarded.ok());
  ASSERT_TRUE(ch.SetRoot("g", guarded->ref()).ok());
  ASSERT_EQ(holder.ReadLine(), "ready");
  EXPECT_EQ(Sample(Scrape(), "structd_session_attaches_total"), 2);
  holder.Kill(SIGKILL);
  ASSERT_EQ(holder.Wait(), 128 + SIGKILL);
  double released = 0;
  for (int i = 0; i < 500 && released < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    released = Sample(Scrape(), "structd_references_released_after_exit_total");
  }
  EXPECT_GE(released, 50);
  after = Scrape();
  EXPECT_EQ(Sample(after, "structd_session_ends_total"), 1);
  EXPECT_EQ(Sample(after, "structd_sessions"), 1);
  EXPECT_EQ(Sample(after, "structd_channel_hostile_memory_refusals_total{channel=\"m\"}"), 0);
}

// The same text through the Admin API (structctl metrics), and it passes
// promtool's checks.
TEST_F(MetricsTest, TheAdminApiServesTheSameMetricsAndPromtoolAcceptsThem) {
  auto me = ConnectTo(daemon_);
  ASSERT_NE(me, nullptr);
  ASSERT_TRUE(me->CreateChannel("m").ok());
  auto admin = AdminOf(daemon_);
  ASSERT_NE(admin, nullptr);
  auto metrics = admin->GetMetrics();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->listen, "127.0.0.1:" + std::to_string(port_));
  EXPECT_EQ(Sample(metrics->text, "structd_channels"), 1);
  EXPECT_EQ(Sample(metrics->text, "structd_channel_types{channel=\"m\"}"), 0);

  TempDir dir;
  const std::string file = dir.Sub("metrics.txt");
  std::ofstream(file) << Scrape();
  std::ofstream(dir.Sub("admin.txt")) << metrics->text;
  for (const std::string& f : {file, dir.Sub("admin.txt")}) {
    // promtool check metrics reads stdin; exit 0 and no findings when clean.
    const std::string out = dir.Sub("promtool.out");
    const int code =
        std::system(("promtool check metrics < " + f + " > " + out + " 2>&1").c_str());
    std::ifstream in(out);
    std::string findings((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(code, 0) << f << ": " << findings;
    EXPECT_EQ(findings, "") << f;
  }
}

TEST(MetricsConfigTest, AnAddressItCannotListenOnIsRefusedAtStart) {
  std::string out;
  EXPECT_EQ(RunDaemonToCompletion({"--metrics-listen", "192.0.2.1:9464", "--socket",
                                   TempDir().Sub("s.sock")},
                                  &out),
            1);
  EXPECT_THAT(out, HasSubstr("metrics_listen '192.0.2.1:9464': cannot serve metrics there"));
}

// A real Prometheus server on loopback scrapes the daemon and answers a
// query for one of its series.
TEST_F(MetricsTest, APrometheusServerScrapesTheDaemonAndAnswersAQuery) {
  auto me = ConnectTo(daemon_);
  ASSERT_NE(me, nullptr);
  auto created = me->CreateChannel("scraped");
  ASSERT_TRUE(created.ok());
  std::vector<client::Owned<Counter>> mine;
  for (int i = 0; i < 7; ++i) mine.push_back(std::move(*created->channel->Allocate<Counter>()));
  const double want = 7 + static_cast<double>(created->channel->SpareCount());

  TempDir dir;
  const int web = FreeLoopbackPort();
  std::ofstream(dir.Sub("prometheus.yml"))
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "scrape_configs:\n  - job_name: structd\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << port_ << "']\n";
  // Everything the child needs is built before fork (the test process has
  // gRPC threads: the child only opens, dups and execs).
  const std::string config = "--config.file=" + dir.Sub("prometheus.yml");
  const std::string storage = "--storage.tsdb.path=" + dir.Sub("data");
  const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(web);
  const std::string log_path = dir.Sub("prometheus.log");
  ChildProcess prometheus([&] {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) return 126;
    execlp("prometheus", "prometheus", config.c_str(), storage.c_str(), listen.c_str(),
           static_cast<char*>(nullptr));
    return 127;
  });
  const std::string query =
      "/api/v1/query?query=structd_channel_live_instances%7Bchannel%3D%22scraped%22%7D";
  std::string answer;
  const std::regex value(R"re("value":\[[0-9.]+,"([0-9.]+)"\])re");
  std::smatch m;
  bool found = false;
  for (int i = 0; i < 300 && !found; ++i) {  // up to 30 s: start-up plus a scrape
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    answer = HttpGet(web, query).value_or("");
    found = std::regex_search(answer, m, value);
  }
  std::ifstream in(log_path);
  std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(found) << "answer: " << answer << "\nprometheus log:\n" << log;
  EXPECT_EQ(std::stod(m[1].str()), want);
}

}  // namespace
}  // namespace structd::testing
