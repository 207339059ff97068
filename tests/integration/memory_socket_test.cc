// The memory socket (memory.proto, issue 16): a member gets its channel's
// memory as descriptors, and nobody else gets any: not a session that has
// not joined, not another process presenting a session id, not a member
// of another channel, not a session that ended.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/child_process.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/unix_socket.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;

// The channel's member capability ("" and a test failure if not created).
std::string Create(GrpcClient& c, const std::string& name) {
  auto created = c.CreateChannel(name);
  EXPECT_TRUE(created.ok()) << created.status();
  if (!created.ok()) return "";
  EXPECT_EQ(created->arena().path(), "");  // descriptors only, never a path
  return created->member_capability();
}

constexpr shm::ArenaFile kHeader{};

TEST(MemorySocketTest, AMemberGetsTheArenaAsDescriptors) {
  DaemonProcess daemon;
  GrpcClient a(daemon.target());
  ASSERT_FALSE(a.memory_socket().empty());
  Create(a, "ch");
  auto arena = a.MapArena("ch");
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ((*arena)->extent_count(), 1u);
  EXPECT_TRUE((*arena)->ExtentBase(0).ok());
  auto unpublished = a.FetchArenaFile("ch", shm::ArenaFile{5});
  EXPECT_EQ(unpublished.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unpublished.status().message(), HasSubstr("not published"));
}

TEST(MemorySocketTest, ASessionThatHasNotJoinedGetsNothing) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  Create(owner, "payroll");
  GrpcClient stranger(daemon.target());
  auto fd = stranger.FetchArenaFile("payroll", kHeader);
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(fd.status().message(), HasSubstr("has not joined"));
}

TEST(MemorySocketTest, AMemberOfOneChannelCannotReachAnother) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  std::string a = Create(owner, "a");
  Create(owner, "b");
  GrpcClient member(daemon.target());
  ASSERT_TRUE(member.Join("a", a));
  EXPECT_TRUE(member.FetchArenaFile("a", kHeader).ok());
  EXPECT_EQ(member.FetchArenaFile("b", kHeader).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(member.FetchArenaFile("nope", kHeader).status().code(),
            absl::StatusCode::kNotFound);
}

// The session id is no bearer token: the kernel says who asks.
TEST(MemorySocketTest, ASessionIdPresentedByAnotherProcessIsRefused) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  Create(owner, "ch");
  ASSERT_TRUE(owner.FetchArenaFile("ch", kHeader).ok());
  // The child asks with the owner's id and secret over its own
  // connection (the memory socket only: no gRPC after fork).
  ChildProcess thief([&] {
    auto fd = owner.FetchArenaFile("ch", kHeader);
    if (fd.ok()) return 1;
    if (fd.status().code() != absl::StatusCode::kPermissionDenied) return 2;
    return fd.status().message().find("another process") != std::string::npos ? 0 : 3;
  });
  EXPECT_EQ(thief.Wait(), 0);
}

TEST(MemorySocketTest, ASessionThatEndedCannotMapNewExtents) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  std::string member_capability = Create(owner, "ch");
  GrpcClient member(daemon.target());
  ASSERT_TRUE(member.Join("ch", member_capability));
  ASSERT_TRUE(member.FetchArenaFile("ch", kHeader).ok());
  member.Detach();
  auto after = member.FetchArenaFile("ch", shm::ArenaFile{0});
  for (int i = 0; i < 100 && after.ok(); ++i) {  // Detach is processed asynchronously
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    after = member.FetchArenaFile("ch", shm::ArenaFile{0});
  }
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnauthenticated);
}

// Garbage on the memory socket closes that connection, nothing else.
TEST(MemorySocketTest, AMalformedFrameClosesOnlyItsConnection) {
  DaemonProcess daemon;
  GrpcClient a(daemon.target());
  Create(a, "ch");
  int fd = ConnectUnix(a.memory_socket());
  ASSERT_GE(fd, 0);
  const char junk[] = "\xff\xff\xff\xff garbage";
  ASSERT_GT(send(fd, junk, sizeof junk, MSG_NOSIGNAL), 0);
  char buf[16];
  EXPECT_EQ(recv(fd, buf, sizeof buf, 0), 0);  // closed by the daemon
  close(fd);
  EXPECT_TRUE(a.FetchArenaFile("ch", kHeader).ok());
}

}  // namespace
}  // namespace structd::testing
