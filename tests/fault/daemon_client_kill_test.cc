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

// Creates channel "work" with type "Job" {mu: mutex, state: u32}.
void CreateWork(GrpcClient& owner, v1::CreateChannelResponse* created,
                v1::RegisterTypeResponse* type) {
  v1::CreateChannelRequest create;
  create.set_name("work");
  ASSERT_TRUE(
      owner.registry().CreateChannel(owner.Ctx().get(), create, created).ok());
  v1::RegisterTypeRequest reg;
  reg.set_channel("work");
  reg.set_key("Job");
  auto* f1 = reg.add_fields();
  f1->set_name("mu");
  f1->set_type("mutex");
  auto* f2 = reg.add_fields();
  f2->set_name("state");
  f2->set_type("u32");
  ASSERT_TRUE(owner.registry().RegisterType(owner.Ctx().get(), reg, type).ok());
}

// Starts structd_test_holder (allocates `count`, locks the first
// instance's mutex) and waits for its "ready REF" line.
struct Holder {
  pid_t pid = -1;
  uint64_t first_ref = 0;
};
Holder StartHolder(const DaemonProcess& daemon,
                   const v1::CreateChannelResponse& created,
                   const v1::RegisterTypeResponse& type, int count) {
  int out[2];
  EXPECT_EQ(pipe(out), 0);
  Holder h;
  h.pid = fork();
  if (h.pid == 0) {
    dup2(out[1], 1);
    std::string n = std::to_string(count);
    execl(STRUCTD_TEST_HOLDER, "structd_test_holder", daemon.target().c_str(),
          "work", created.member_capability().c_str(),
          type.type().token().c_str(), n.c_str(), "0", nullptr);
    _exit(127);
  }
  close(out[1]);
  FILE* in = fdopen(out[0], "r");
  char line[128] = {};
  unsigned long long first = 0;
  if (fgets(line, sizeof line, in) != nullptr &&
      sscanf(line, "ready %llx", &first) == 1) {
    h.first_ref = first;
  }
  fclose(in);
  return h;
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

TEST(DaemonClientKillTest, KilledClientsReferencesAreReleasedAtOnce) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  v1::CreateChannelResponse created;
  v1::RegisterTypeResponse type;
  CreateWork(owner, &created, &type);
  ASSERT_EQ(owner.LiveInstances("work"), 0u);
  Holder holder = StartHolder(daemon, created, type, 25);
  ASSERT_NE(holder.first_ref, 0u) << "holder never got ready";
  EXPECT_EQ(owner.LiveInstances("work"), 25u);
  KillAndReap(holder.pid);
  // The daemon sees the stream drop at once and releases the ledger.
  for (int i = 0; i < 500 && owner.LiveInstances("work") != 0u; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(owner.LiveInstances("work"), 0u);
  v1::ListSessionsResponse sessions;
  grpc::ClientContext ctx;
  ASSERT_TRUE(owner.admin().ListSessions(&ctx, {}, &sessions).ok());
  EXPECT_EQ(sessions.sessions_size(), 1);  // only the owner is left
}

TEST(DaemonClientKillTest, MutexHeldByAKilledClientReportsOwnerDiedToTheNextLocker) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  v1::CreateChannelResponse created;
  v1::RegisterTypeResponse type;
  CreateWork(owner, &created, &type);
  Holder holder = StartHolder(daemon, created, type, 1);
  ASSERT_NE(holder.first_ref, 0u) << "holder never got ready";
  // Keep the instance alive past the holder's death with a root.
  v1::SetRootRequest root;
  root.set_channel("work");
  root.set_name("job");
  root.set_ref(holder.first_ref);
  v1::SetRootResponse rr;
  ASSERT_TRUE(owner.instances().SetRoot(owner.Ctx().get(), root, &rr).ok());

  auto arena = owner.MapArena("work");
  ASSERT_TRUE(arena.ok()) << arena.status();
  auto inst = (*arena)->Resolve(shm::Ref::FromBits(holder.first_ref));
  ASSERT_TRUE(inst.ok());
  shm::MutexField mu(inst->payload());
  EXPECT_EQ(mu.owner_pid(), uint32_t(holder.pid));
  EXPECT_EQ(mu.TryLock().status().code(), absl::StatusCode::kUnavailable);
  KillAndReap(holder.pid);
  auto g = mu.LockFor(std::chrono::seconds(10));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->owner_died());
}

}  // namespace
}  // namespace structd
