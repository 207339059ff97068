#ifndef STRUCTD_TESTS_BENCH_BENCH_DAEMON_H_
#define STRUCTD_TESTS_BENCH_BENCH_DAEMON_H_

// A structd started for a benchmark program (temp socket and state dir,
// stopped at the end), this process connected, and one channel created;
// and the session of a benchmark's child process in that channel.

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "testing/daemon_process.h"

namespace structd::bench {

struct BenchDaemon {
  std::unique_ptr<testing::DaemonProcess> daemon;
  std::unique_ptr<client::Client> client;
  client::CreatedChannel created;

  client::Channel& ch() { return *created.channel; }

  absl::Status Start(const std::string& channel) {
    daemon = std::make_unique<testing::DaemonProcess>();
    client::ClientOptions o;
    o.socket = daemon->socket();
    auto c = client::Client::Connect(o);
    if (!c.ok()) return c.status();
    client = std::move(*c);
    auto made = client->CreateChannel(channel);
    if (!made.ok()) return made.status();
    created = std::move(*made);
    return absl::OkStatus();
  }
};

// A child's session: argv is MODE SOCKET CHANNEL CAPABILITY [...]. The
// client outlives the channel it joined (declared first).
struct ChildSession {
  std::unique_ptr<client::Client> client;
  std::shared_ptr<client::Channel> channel;
  client::Channel* operator->() const { return channel.get(); }
};
inline std::optional<ChildSession> JoinFromArgs(char** argv) {
  client::ClientOptions o;
  o.socket = argv[2];
  auto c = client::Client::Connect(o);
  if (!c.ok()) return std::nullopt;
  auto ch = (*c)->Join(argv[3], argv[4]);
  if (!ch.ok()) return std::nullopt;
  return ChildSession{std::move(*c), std::move(*ch)};
}

}  // namespace structd::bench

#endif  // STRUCTD_TESTS_BENCH_BENCH_DAEMON_H_
