// arena_backing = "memfd" (issue 16): a real daemon under a stand-in for
// systemd's descriptor store. A member that truncates or grows its
// extent descriptor gets an error, and the daemon and the other members
// never notice; a killed daemon gets its memory back from the store and
// clients keep their mappings; without a store the option is refused.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/daemon_process.h"
#include "testing/grpc_client.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;
constexpr off_t kExtent = 1 << 20;  // DaemonProcess runs with --extent-size 1048576

std::string Create(GrpcClient& c, const std::string& name) {
  auto created = c.CreateChannel(name);
  EXPECT_TRUE(created.ok()) << created.status();
  return created.ok() ? created->member_capability() : "";
}


class SealedMemoryTest : public ::testing::Test {
 protected:
  DaemonProcess daemon_{{"--arena-backing", "memfd"}, DaemonProcess::Supervisor::kSystemd};
};

TEST_F(SealedMemoryTest, AMemberThatResizesItsExtentGetsAnErrorAndNobodyElseNotices) {
  GrpcClient owner(daemon_.target());
  std::string cap = Create(owner, "ch");
  GrpcClient other(daemon_.target());
  ASSERT_TRUE(other.Join("ch", cap));
  auto others_view = other.MapArena("ch");
  ASSERT_TRUE(others_view.ok()) << others_view.status();
  auto base = (*others_view)->ExtentBase(0);
  ASSERT_TRUE(base.ok()) << base.status();
  std::memcpy(*base + kExtent - 8, "intact!!", 8);

  // The hostile member: its own descriptors of the extent and the header.
  for (shm::ArenaFile file : {shm::ArenaFile{0}, shm::ArenaFile{}}) {
    auto fd = owner.FetchArenaFile("ch", file);
    ASSERT_TRUE(fd.ok()) << fd.status();
    struct stat st;
    ASSERT_EQ(fstat(fd->get(), &st), 0);
    EXPECT_EQ(ftruncate(fd->get(), st.st_size / 2), -1);
    EXPECT_EQ(errno, EPERM) << "cutting must be refused by the kernel";
    EXPECT_EQ(ftruncate(fd->get(), st.st_size * 8), -1);
    EXPECT_EQ(errno, EPERM) << "growing must be refused by the kernel";
    EXPECT_EQ(fallocate(fd->get(), FALLOC_FL_KEEP_SIZE, 0, st.st_size * 16), -1);
    EXPECT_EQ(errno, EPERM) << "blocks past the end must be refused";
    ASSERT_EQ(fstat(fd->get(), &st), 0);
    EXPECT_EQ(st.st_size, file.is_header() ? static_cast<off_t>(sizeof(shm::ArenaHeader))
                                           : kExtent);
  }
  // The other member reads on (no SIGBUS, no zeros), and the channel is
  // not damaged.
  EXPECT_EQ(std::memcmp(*base + kExtent - 8, "intact!!", 8), 0);
  EXPECT_TRUE((*others_view)->Intact().ok());
  EXPECT_EQ(owner.TouchChannel("ch"), grpc::StatusCode::OK);
  EXPECT_EQ(other.TouchChannel("ch"), grpc::StatusCode::OK);
}

TEST_F(SealedMemoryTest, AKilledDaemonGetsItsMemoryBackAndClientsKeepTheirMappings) {
  auto client = std::make_unique<GrpcClient>(daemon_.target());
  std::string cap = Create(*client, "ch");
  auto view = client->MapArena("ch");
  ASSERT_TRUE(view.ok()) << view.status();
  uint8_t* base = *(*view)->ExtentBase(0);
  std::memcpy(base + kExtent - 8, "before!!", 8);
  std::vector<std::string> names = daemon_.systemd()->Names();
  EXPECT_EQ(std::count_if(names.begin(), names.end(),
                          [](const std::string& n) { return n.starts_with("arena."); }),
            2)
      << "the header and extent 0 are kept in the store";

  client.reset();
  daemon_.Kill9();
  daemon_.Start();
  // The old mapping is the same memory the restarted daemon serves.
  std::memcpy(base + kExtent - 16, "after!!!", 8);
  GrpcClient again(daemon_.target());
  ASSERT_TRUE(again.Join("ch", cap));
  auto fresh = again.MapArena("ch");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  uint8_t* fresh_base = *(*fresh)->ExtentBase(0);
  EXPECT_EQ(std::memcmp(fresh_base + kExtent - 8, "before!!", 8), 0);
  EXPECT_EQ(std::memcmp(fresh_base + kExtent - 16, "after!!!", 8), 0);
  EXPECT_EQ(again.TouchChannel("ch"), grpc::StatusCode::OK);
}

TEST_F(SealedMemoryTest, ADroppedChannelLeavesTheStore) {
  GrpcClient owner(daemon_.target());
  auto created = owner.CreateChannel("gone");
  ASSERT_TRUE(created.ok()) << created.status();
  auto has_arena = [&] {
    std::vector<std::string> names = daemon_.systemd()->Names();
    return std::any_of(names.begin(), names.end(),
                       [](const std::string& n) { return n.starts_with("arena."); });
  };
  ASSERT_TRUE(has_arena());
  v1::DropChannelRequest drop;
  drop.set_channel("gone");
  drop.set_owner_capability(created->owner_capability());
  v1::DropChannelResponse dropped;
  ASSERT_TRUE(owner.registry().DropChannel(owner.Ctx().get(), drop, &dropped).ok());
  owner.Detach();
  for (int i = 0; i < 200 && has_arena(); ++i) usleep(10000);
  EXPECT_FALSE(has_arena()) << "FDSTOREREMOVE was never sent";
}

TEST(SealedMemoryWithoutStoreTest, TheDaemonRefusesMemfdWithoutADescriptorStore) {
  TempDir dir;
  std::string output;
  int code = RunDaemonToCompletion({"--socket", dir.Sub("s.sock"), "--state-dir",
                                    dir.Sub("state"), "--arena-backing", "memfd"},
                                   &output);
  EXPECT_NE(code, 0);
  EXPECT_THAT(output, HasSubstr("NOTIFY_SOCKET"));
  EXPECT_THAT(output, HasSubstr("arena_backing = \"files\""));
}

}  // namespace
}  // namespace structd::testing
