// The client examples (client/examples/) run against a test daemon, as the
// README tells users to run them, and print what they promise.

#include <cstdlib>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/daemon_process.h"
#include "testing/spawned_process.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;

// Runs an example with STRUCTD_SOCKET pointing at `daemon`; returns its
// whole output and exit code.
std::pair<std::string, int> RunExample(const DaemonProcess& daemon,
                                       std::vector<std::string> argv) {
  setenv("STRUCTD_SOCKET", daemon.socket().c_str(), 1);
  SpawnedProcess example(argv);
  std::string output = example.ReadAll(std::chrono::seconds(60));
  return {output, example.Wait()};
}

TEST(ExamplesTest, CountersGiveExactTotals) {
  DaemonProcess daemon;
  auto [output, code] = RunExample(daemon, {STRUCTD_EXAMPLE_COUNTERS, "3", "20000"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("hits = 60000 (expected 60000)"));
}

TEST(ExamplesTest, OrderBookReadersShowTheirOwnBehavior) {
  DaemonProcess daemon;
  auto [output, code] = RunExample(daemon, {STRUCTD_EXAMPLE_ORDER_BOOK, "60"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("no behavior bound for type 'Book'"));
  EXPECT_THAT(output, HasSubstr("[printer"));
  EXPECT_THAT(output, HasSubstr("ACME  bid"));
  EXPECT_THAT(output, HasSubstr("[analyst"));
  EXPECT_THAT(output, HasSubstr("spread"));
  EXPECT_THAT(output, HasSubstr("60 updates published; readers done"));
}

TEST(ExamplesTest, GraphHandoffWalksTheWholeTreeFromOneRef) {
  DaemonProcess daemon;
  auto [output, code] = RunExample(daemon, {STRUCTD_EXAMPLE_GRAPH_HANDOFF, "20000"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("walked 20000 nodes, sum 199990000"));
}

TEST(ExamplesTest, JobQueueLosesNoJobWhenAWorkerIsKilledMidJob) {
  DaemonProcess daemon;
  auto [output, code] = RunExample(daemon, {STRUCTD_EXAMPLE_JOB_QUEUE, "40"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("killed the careful worker"));
  EXPECT_THAT(output, HasSubstr("job 1 was taken by pid"));
  EXPECT_THAT(output, HasSubstr("40 of 40 jobs done and correct; 1 sent again"));
  EXPECT_THAT(output, HasSubstr("[quick pid"));
}

}  // namespace
}  // namespace structd::testing
