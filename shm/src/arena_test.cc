#include "structd/shm/arena.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/shm/walk.h"
#include "testing/child_process.h"
#include "testing/temp_dir.h"

namespace structd::shm {
namespace {

using ::testing::HasSubstr;
using structd::testing::ChildProcess;
using structd::testing::TempDir;

ArenaOptions Small(uint32_t max_extents = 8, uint32_t initial = 1) {
  ArenaOptions o;
  o.extent_size = 128 * 1024;
  o.max_extents = max_extents;
  o.initial_extents = initial;
  return o;
}

TEST(ArenaTest, CreateWritesHeaderAndInitialExtents) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small(8, 2));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->extent_count(), 2u);
  EXPECT_EQ((*a)->format_version(), kFormatVersion);
  EXPECT_NE((*a)->epoch(), 0u);
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("a/arena")));
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("a/extent.0")));
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("a/extent.1")));
  EXPECT_EQ(std::filesystem::file_size(dir.Sub("a/extent.1")), 128u * 1024);
  struct stat st;
  ASSERT_EQ(stat(dir.Sub("a/extent.0").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Every extent is backed: its blocks are allocated, not a sparse hole.
  EXPECT_GE(uint64_t(st.st_blocks) * 512, 128u * 1024);
}

TEST(ArenaTest, CreateRefusesAnExistingArena) {
  TempDir dir;
  ASSERT_TRUE(Arena::Create(dir.Sub("a"), Small()).ok());
  auto again = Arena::Create(dir.Sub("a"), Small());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(ArenaTest, CreateValidatesOptions) {
  TempDir dir;
  ArenaOptions o = Small();
  o.extent_size = 100000;
  EXPECT_EQ(Arena::Create(dir.Sub("a"), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = Small();
  o.max_extents = 0;
  EXPECT_EQ(Arena::Create(dir.Sub("b"), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = Small(2, 3);
  auto s = Arena::Create(dir.Sub("c"), o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("initial_extents"));
}

TEST(ArenaTest, OpenSeesWhatTheCreatorPublished) {
  TempDir dir;
  auto owner = Arena::Create(dir.Sub("a"), Small());
  ASSERT_TRUE(owner.ok());
  auto reader = Arena::Open(dir.Sub("a"), Access::kReadOnly);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->epoch(), (*owner)->epoch());
  EXPECT_EQ((*reader)->extent_count(), 1u);
  ASSERT_TRUE((*owner)->Grow().ok());
  EXPECT_EQ((*reader)->extent_count(), 2u);
  auto base = (*reader)->ExtentBase(1);
  ASSERT_TRUE(base.ok()) << base.status();
  auto* eh = reinterpret_cast<const ExtentHeader*>(*base);
  EXPECT_EQ(eh->magic, kExtentMagic);
  EXPECT_EQ(eh->extent_id, 1u);
}

TEST(ArenaTest, OpenMissingArenaIsNotFound) {
  TempDir dir;
  auto s = Arena::Open(dir.Sub("nothing"), Access::kReadOnly).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no arena"));
}

TEST(ArenaTest, OpenOtherFormatVersionNamesBothVersions) {
  TempDir dir;
  {
    auto a = Arena::Create(dir.Sub("a"), Small());
    ASSERT_TRUE(a.ok());
    (*a)->header().format_version = 2;
  }
  auto s = Arena::Open(dir.Sub("a"), Access::kReadWrite).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("arena format 2"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("reads format 1"));
}

TEST(ArenaTest, OpenDamagedHeaderIsDataLoss) {
  TempDir dir;
  {
    auto a = Arena::Create(dir.Sub("a"), Small());
    ASSERT_TRUE(a.ok());
    (*a)->header().extent_size = 12345;
  }
  EXPECT_EQ(Arena::Open(dir.Sub("a"), Access::kReadOnly).status().code(),
            absl::StatusCode::kDataLoss);
  {
    std::ofstream f(dir.Sub("b_arena"));
    f << "not an arena";
  }
  std::filesystem::create_directories(dir.Sub("b"));
  std::filesystem::rename(dir.Sub("b_arena"), dir.Sub("b/arena"));
  EXPECT_EQ(Arena::Open(dir.Sub("b"), Access::kReadOnly).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ArenaTest, ExtentWithForeignHeaderIsRefused) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small(8, 2));
  ASSERT_TRUE(a.ok());
  auto b = Arena::Create(dir.Sub("b"), Small(8, 2));
  ASSERT_TRUE(b.ok());
  // Swap in another arena's extent: its epoch differs.
  std::filesystem::copy_file(dir.Sub("b/extent.1"), dir.Sub("a/extent.1"),
                             std::filesystem::copy_options::overwrite_existing);
  auto reader = Arena::Open(dir.Sub("a"), Access::kReadOnly);
  ASSERT_TRUE(reader.ok());
  auto s = (*reader)->ExtentBase(1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("foreign"));
}

TEST(ArenaTest, ExtentsAreMappedLazily) {
  TempDir dir;
  auto owner = Arena::Create(dir.Sub("a"), Small(8, 3));
  ASSERT_TRUE(owner.ok());
  auto reader = Arena::Open(dir.Sub("a"), Access::kReadOnly);
  ASSERT_TRUE(reader.ok());
  // An unpublished extent is never touched: asking for it fails cleanly.
  EXPECT_EQ((*reader)->ExtentBase(3).status().code(),
            absl::StatusCode::kNotFound);
  // Remove extent 2's file: a lazy opener only notices when it maps it.
  std::filesystem::remove(dir.Sub("a/extent.2"));
  EXPECT_TRUE((*reader)->ExtentBase(0).ok());
  EXPECT_FALSE((*reader)->ExtentBase(2).ok());
}

TEST(ArenaTest, GrowPastMaxExtentsIsResourceExhausted) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small(2, 1));
  ASSERT_TRUE(a.ok());
  auto id = (*a)->Grow();
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 1u);
  auto s = (*a)->Grow().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_extents"));
  EXPECT_EQ((*a)->extent_count(), 2u);
}

TEST(ArenaTest, GrowNeverReplacesAnExtentWhenTheCountWasScribbledLow) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small(8, 3));
  ASSERT_TRUE(a.ok());
  struct stat before;
  ASSERT_EQ(stat(dir.Sub("a/extent.1").c_str(), &before), 0);
  (*a)->header().extent_count.store(1);  // a client scribbles
  auto id = (*a)->Grow();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, 3u);  // extents 1 and 2 were adopted, not overwritten
  EXPECT_EQ((*a)->extent_count(), 4u);
  struct stat after;
  ASSERT_EQ(stat(dir.Sub("a/extent.1").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
}

TEST(ArenaTest, GrowRecountsWhenTheCountWasScribbledHigh) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small(8, 2));
  ASSERT_TRUE(a.ok());
  (*a)->header().extent_count.store(8);  // claims every extent exists
  auto id = (*a)->Grow();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, 2u);
  EXPECT_EQ((*a)->extent_count(), 3u);
}

// Found by the hostile-state fault test: a count scribbled far above
// max_extents made the consistency check walk twelve million extents.
TEST(ArenaTest, ACountScribbledAboveMaxExtentsIsClampedAndReported) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small(8, 2));
  ASSERT_TRUE(a.ok());
  (*a)->header().extent_count.store(12163329);
  EXPECT_EQ((*a)->extent_count(), 8u);
  EXPECT_EQ((*a)->raw_extent_count(), 12163329u);
  EXPECT_EQ((*a)->ExtentBase(8).status().code(), absl::StatusCode::kNotFound);
  std::vector<WalkProblem> problems =
      ForEachInstance(**a, [](const InstancePtr&) { return true; });
  // The damaged count, then the six extents that have no file.
  ASSERT_EQ(problems.size(), 7u);
  EXPECT_THAT(problems[0].what, HasSubstr("extent count 12163329 is more than max_extents 8"));
  EXPECT_THAT(problems[1].what, HasSubstr("extent 2"));
}

TEST(ArenaTest, AnArenaWithAScribbledCountOpensAndItsOwnerRecountsIt) {
  TempDir dir;
  {
    auto a = Arena::Create(dir.Sub("a"), Small(8, 3));
    ASSERT_TRUE(a.ok());
    (*a)->header().extent_count.store(12163329);
  }
  auto reader = Arena::Open(dir.Sub("a"), Access::kReadOnly);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->extent_count(), 8u);  // clamped until repaired
  EXPECT_EQ((*reader)->RecountExtents().status().code(),
            absl::StatusCode::kFailedPrecondition);  // only the owner repairs
  auto owner = Arena::Open(dir.Sub("a"), Access::kReadWrite);
  ASSERT_TRUE(owner.ok()) << owner.status();
  auto n = (*owner)->RecountExtents();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ((*reader)->extent_count(), 3u);  // one header, seen by all
  EXPECT_TRUE((*reader)->ExtentBase(2).ok());
}

TEST(ArenaTest, ExtentLeftUnpublishedByADeadGrowerIsAdopted) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small(8, 2));
  ASSERT_TRUE(a.ok());
  // Simulate: extent 1 was created, then the grower died before publishing.
  (*a)->header().extent_count.store(1);
  auto id = (*a)->Grow();
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 2u);
  EXPECT_TRUE((*a)->ExtentBase(1).ok());
}

TEST(ArenaTest, ReadOnlyOpenerCannotGrow) {
  TempDir dir;
  ASSERT_TRUE(Arena::Create(dir.Sub("a"), Small()).ok());
  auto r = Arena::Open(dir.Sub("a"), Access::kReadOnly);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->Grow().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// A file system that cannot back an extent makes Grow fail with
// RESOURCE_EXHAUSTED and publishes nothing. RLIMIT_FSIZE makes
// posix_fallocate fail like a full file system, without needing root.
TEST(ArenaTest, GrowOnAFullFileSystemFailsCleanly) {
  TempDir dir;
  ASSERT_TRUE(Arena::Create(dir.Sub("a"), Small()).ok());
  ChildProcess child([&] {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {64 * 1024, 64 * 1024};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 10;
    auto a = Arena::Open(dir.Sub("a"), Access::kReadWrite);
    if (!a.ok()) return 11;
    auto g = (*a)->Grow();
    if (g.ok()) return 12;
    if (g.status().code() != absl::StatusCode::kResourceExhausted) return 13;
    if ((*a)->extent_count() != 1) return 14;
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("a/extent.1")));
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("a/extent.1.tmp")));
  auto a = Arena::Open(dir.Sub("a"), Access::kReadWrite);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->extent_count(), 1u);
  EXPECT_TRUE((*a)->Grow().ok());  // and it recovers once there is space
}

}  // namespace
}  // namespace structd::shm
