#ifndef STRUCTD_TESTS_BENCH_BENCH_DAEMON_H_
#define STRUCTD_TESTS_BENCH_BENCH_DAEMON_H_

// A structd started for a benchmark program (temp socket and state dir,
// stopped at the end), this process connected, and one channel created.

#include <memory>
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

}  // namespace structd::bench

#endif  // STRUCTD_TESTS_BENCH_BENCH_DAEMON_H_
