// kill -9 of a client process that holds references and a mutex field,
// against a real daemon (invariant 6).

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/shm/arena.h"
#include "structd/shm/sync.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"

namespace structd {
namespace {

using structd::testing::DaemonProcess;
using structd::testing::GrpcClient;

uint64_t LiveInstances(GrpcClient& c, const std::string& name) {
  v1::ListChannelsResponse resp;
  grpc::ClientContext ctx;
  EXPECT_TRUE(c.admin().ListChannels(&ctx, {}, &resp).ok());
  for (const auto& ch : resp.channels()) {
    if (ch.name() == name) return ch.live_instances();
  }
  return ~uint64_t{0};
}

TEST(DaemonClientKillTest, KilledClientsReferencesAreReleasedAtOnce) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  v1::CreateChannelRequest create;
  create.set_name("work");
  v1::CreateChannelResponse created;
  ASSERT_TRUE(owner.registry().CreateChannel(owner.Ctx().get(), create, &created).ok());
  v1::RegisterTypeRequest reg;
  reg.set_channel("work");
  reg.set_key("Job");
  auto* f1 = reg.add_fields();
  f1->set_name("mu");
  f1->set_type("mutex");
  auto* f2 = reg.add_fields();
  f2->set_name("state");
  f2->set_type("u32");
  v1::RegisterTypeResponse type;
  ASSERT_TRUE(owner.registry().RegisterType(owner.Ctx().get(), reg, &type).ok());
  ASSERT_EQ(LiveInstances(owner, "work"), 0u);

  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t child = fork();
  if (child == 0) {
    dup2(out[1], 1);
    execl(STRUCTD_TEST_HOLDER, "structd_test_holder", daemon.target().c_str(),
          "work", created.member_capability().c_str(),
          type.type().token().c_str(), "25", "0", nullptr);
    _exit(127);
  }
  close(out[1]);
  FILE* in = fdopen(out[0], "r");
  char line[128] = {};
  ASSERT_NE(fgets(line, sizeof line, in), nullptr) << "holder never got ready";
  unsigned long long first = 0;
  ASSERT_EQ(sscanf(line, "ready %llx", &first), 1) << line;
  EXPECT_EQ(LiveInstances(owner, "work"), 25u);

  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  fclose(in);

  // The daemon sees the stream drop at once and releases the ledger.
  for (int i = 0; i < 500 && LiveInstances(owner, "work") != 0u; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(LiveInstances(owner, "work"), 0u);
  v1::ListSessionsResponse sessions;
  grpc::ClientContext ctx;
  ASSERT_TRUE(owner.admin().ListSessions(&ctx, {}, &sessions).ok());
  EXPECT_EQ(sessions.sessions_size(), 1);  // only the owner is left
}

TEST(DaemonClientKillTest, MutexHeldByAKilledClientReportsOwnerDiedToTheNextLocker) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  v1::CreateChannelRequest create;
  create.set_name("work");
  v1::CreateChannelResponse created;
  ASSERT_TRUE(owner.registry().CreateChannel(owner.Ctx().get(), create, &created).ok());
  v1::RegisterTypeRequest reg;
  reg.set_channel("work");
  reg.set_key("Job");
  auto* f1 = reg.add_fields();
  f1->set_name("mu");
  f1->set_type("mutex");
  v1::RegisterTypeResponse type;
  ASSERT_TRUE(owner.registry().RegisterType(owner.Ctx().get(), reg, &type).ok());

  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t child = fork();
  if (child == 0) {
    dup2(out[1], 1);
    execl(STRUCTD_TEST_HOLDER, "structd_test_holder", daemon.target().c_str(),
          "work", created.member_capability().c_str(),
          type.type().token().c_str(), "1", "0", nullptr);
    _exit(127);
  }
  close(out[1]);
  FILE* in = fdopen(out[0], "r");
  char line[128] = {};
  ASSERT_NE(fgets(line, sizeof line, in), nullptr);
  unsigned long long first = 0;
  ASSERT_EQ(sscanf(line, "ready %llx", &first), 1);
  // Keep the instance alive past the holder's death with a root.
  v1::SetRootRequest root;
  root.set_channel("work");
  root.set_name("job");
  root.set_ref(first);
  v1::SetRootResponse rr;
  ASSERT_TRUE(owner.instances().SetRoot(owner.Ctx().get(), root, &rr).ok());

  auto arena = shm::Arena::Open(created.arena().path(), shm::Access::kReadWrite);
  ASSERT_TRUE(arena.ok());
  auto inst = (*arena)->Resolve(shm::Ref::FromBits(first));
  ASSERT_TRUE(inst.ok());
  shm::MutexField mu(inst->payload());
  EXPECT_EQ(mu.owner_pid(), uint32_t(child));
  EXPECT_EQ(mu.TryLock().status().code(), absl::StatusCode::kUnavailable);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  fclose(in);
  auto g = mu.LockFor(std::chrono::seconds(10));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->owner_died());
}

}  // namespace
}  // namespace structd
