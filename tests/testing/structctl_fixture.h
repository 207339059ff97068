#ifndef STRUCTD_TESTS_TESTING_STRUCTCTL_FIXTURE_H_
#define STRUCTD_TESTS_TESTING_STRUCTCTL_FIXTURE_H_

// The fixture of tests that run structctl against a real daemon: a
// daemon, a client that created channel "shop", and structctl runs whose
// --json output is parsed with protobuf's JSON parser into
// google.protobuf.Value. A test target using it defines STRUCTD_STRUCTCTL
// (the binary's path) and links protobuf.

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "testing/daemon_process.h"
#include "testing/spawned_process.h"

namespace structd::testing {

struct CtlRun {
  int code;
  std::string out;
};

class StructctlFixture : public ::testing::Test {
 protected:
  using Value = google::protobuf::Value;

  explicit StructctlFixture(std::vector<std::string> daemon_args = {})
      : daemon_(std::move(daemon_args)) {}

  void SetUp() override {
    client::ClientOptions o;
    o.socket = daemon_.socket();
    auto c = client::Client::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
    auto ch = client_->CreateChannel("shop");
    ASSERT_TRUE(ch.ok()) << ch.status();
    created_ = std::move(*ch);
  }
  client::Channel& c() { return *created_.channel; }

  // Runs structctl with --socket. `out` is stdout; with
  // Stderr::kWithStdout, stderr (where error messages go) too.
  CtlRun Structctl(std::vector<std::string> args, bool with_socket = true,
                   SpawnedProcess::Stderr err = SpawnedProcess::Stderr::kInherit) {
    std::vector<std::string> argv = {STRUCTD_STRUCTCTL};
    if (with_socket) {
      argv.push_back("--socket");
      argv.push_back(daemon_.socket());
    }
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnedProcess p(argv, err);
    std::string out = p.ReadAll(std::chrono::seconds(60));
    return {p.Wait(), out};
  }
  // stdout and stderr together: for checking what an error says.
  CtlRun StructctlAll(std::vector<std::string> args) {
    return Structctl(std::move(args), true, SpawnedProcess::Stderr::kWithStdout);
  }
  // `structctl --json ARGS`, expected to succeed, parsed.
  Value Json(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    CtlRun r = Structctl(args);
    EXPECT_EQ(r.code, 0) << r.out;
    Value v;
    auto s = google::protobuf::util::JsonStringToMessage(r.out, &v);
    EXPECT_TRUE(s.ok()) << s.ToString() << "\n" << r.out;
    return v;
  }
  static const Value& Get(const Value& v, const std::string& key) {
    return v.struct_value().fields().at(key);
  }

  DaemonProcess daemon_;
  std::unique_ptr<client::Client> client_;
  client::CreatedChannel created_;
};

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_STRUCTCTL_FIXTURE_H_
