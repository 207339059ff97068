#include "structd/shm/arena.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/shm/mapping_guard.h"
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

// Issue 13.1: one truncate(2) of an extent file by any process of the
// daemon's uid made the daemon die of SIGBUS on its next access. With the
// guard installed (the daemon installs it at start), the access reads
// zeros and the arena reports itself damaged instead. Runs in a child so
// the process-wide handler does not leak into other tests.
TEST(ArenaTest, ATruncatedExtentUnderTheGuardIsDataLossNotSigbus) {
  TempDir dir;
  ChildProcess child([&] {
    InstallSigbusGuard();
    auto a = Arena::Create(dir.Sub("a"), Small(8, 2));
    if (!a.ok()) return 10;
    auto base = (*a)->ExtentBase(1);
    if (!base.ok()) return 11;
    (*base)[100000] = 42;
    if (!(*a)->Intact().ok()) return 12;
    if (truncate(dir.Sub("a/extent.1").c_str(), 0) != 0) return 13;
    volatile uint8_t* p = *base;
    uint8_t seen = p[100000];  // SIGBUS without the guard
    p[100001] = 7;             // and writes go to private zero pages
    if (seen != 0) return 14;
    absl::Status s = (*a)->Intact();
    if (s.code() != absl::StatusCode::kDataLoss) return 15;
    if (s.message().find("extent.1") == std::string::npos) return 16;
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
}

// The header's mapping is guarded too (its tag once wrapped to "intact").
TEST(ArenaTest, ATruncatedHeaderUnderTheGuardIsDataLoss) {
  TempDir dir;
  ChildProcess child([&] {
    InstallSigbusGuard();
    auto a = Arena::Create(dir.Sub("a"), Small(8, 1));
    if (!a.ok()) return 10;
    if (truncate(dir.Sub("a/arena").c_str(), 0) != 0) return 11;
    (void)(*a)->Grow();  // reads the header's extent count
    absl::Status s = (*a)->Intact();
    if (s.code() != absl::StatusCode::kDataLoss) return 12;
    if (s.message().find("/arena was truncated") == std::string::npos) return 13;
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
}

TEST(ArenaTest, ASigbusOutsideGuardedMappingsStillKills) {
  TempDir dir;
  ChildProcess child([&] {
    InstallSigbusGuard();
    std::string path = dir.Sub("plain");
    int fd = open(path.c_str(), O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, 8192) != 0) return 10;
    auto* p = static_cast<volatile uint8_t*>(
        mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (ftruncate(fd, 0) != 0) return 11;
    return int(p[4096]) + 20;  // not registered: the process dies
  });
  // Killed by SIGBUS, or (under ASan or TSan) reported by the sanitizer's
  // handler, which exits non-zero. Never the 20 a swallowed SIGBUS returns.
  int code = child.Wait();
  EXPECT_TRUE(code != 0 && code != 20) << code;
}

// Issue 13.1 at restart: the recount used to stop at the first short file,
// so a truncated extent 0 made the daemon find 0 extents and lose every
// instance of the channel. Adopt puts the file back and keeps the others.
TEST(ArenaTest, AdoptRestoresATruncatedExtentAndKeepsTheOthers) {
  TempDir dir;
  ArenaIdentity identity;
  {
    auto a = Arena::Create(dir.Sub("a"), Small(8, 3));
    ASSERT_TRUE(a.ok());
    identity = (*a)->identity();
    (*(*a)->ExtentBase(2))[200000 - 70000] = 99;
  }
  ASSERT_EQ(truncate(dir.Sub("a/extent.0").c_str(), 0), 0);
  ASSERT_EQ(truncate(dir.Sub("a/extent.1").c_str(), 5000), 0);
  std::vector<std::string> repairs;
  auto a = Arena::Adopt(dir.Sub("a"), identity, &repairs);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->extent_count(), 3u);
  EXPECT_EQ(repairs.size(), 2u);
  EXPECT_THAT(repairs[0], HasSubstr("extent.0"));
  ASSERT_TRUE((*a)->ExtentBase(0).ok()) << (*a)->ExtentBase(0).status();
  ASSERT_TRUE((*a)->ExtentBase(1).ok());
  EXPECT_EQ((*(*a)->ExtentBase(2))[200000 - 70000], 99);
  EXPECT_EQ(std::filesystem::file_size(dir.Sub("a/extent.0")), 128u * 1024);
}

// Issue 13.11: 16 bytes scribbled over the header's epoch and extent size
// made a channel unrecoverable although every extent was intact.
TEST(ArenaTest, AdoptRewritesAScribbledHeaderFromWhatTheOwnerKnows) {
  TempDir dir;
  ArenaIdentity identity;
  {
    auto a = Arena::Create(dir.Sub("a"), Small(8, 2));
    ASSERT_TRUE(a.ok());
    identity = (*a)->identity();
    (*(*a)->ExtentBase(1))[70000] = 5;
  }
  for (ArenaIdentity known : {identity, ArenaIdentity{}}) {
    {
      std::fstream f(dir.Sub("a/arena"), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(16);  // epoch, extent_size
      const uint64_t junk[2] = {0x1234, 12345};
      f.write(reinterpret_cast<const char*>(junk), sizeof junk);
    }
    EXPECT_FALSE(Arena::Open(dir.Sub("a"), Access::kReadWrite).ok());
    std::vector<std::string> repairs;
    // Without records, extent 0's header says what the geometry was.
    auto a = Arena::Adopt(dir.Sub("a"), known, &repairs);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ((*a)->epoch(), identity.epoch);
    EXPECT_EQ((*a)->extent_size(), identity.extent_size);
    EXPECT_EQ((*a)->extent_count(), 2u);
    ASSERT_EQ(repairs.size(), 1u);
    EXPECT_THAT(repairs[0], HasSubstr("header was damaged"));
    EXPECT_EQ((*(*a)->ExtentBase(1))[70000], 5);
  }
}

TEST(ArenaTest, AdoptBumpsTheOwnerGeneration) {
  TempDir dir;
  ArenaIdentity identity;
  uint64_t before = 0;
  {
    auto a = Arena::Create(dir.Sub("a"), Small());
    ASSERT_TRUE(a.ok());
    identity = (*a)->identity();
    before = (*a)->owner_generation();
  }
  auto a = Arena::Adopt(dir.Sub("a"), identity, nullptr);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->owner_generation(), before + 1);
}

// Issue 13.10: growth waited up to 10 s for a flock on DIR/grow.lock that
// any process of the daemon's uid could take. Growers use no lock another
// process can hold any more.
TEST(ArenaTest, AProcessHoldingAnOldGrowLockDoesNotStallGrowth) {
  TempDir dir;
  auto a = Arena::Create(dir.Sub("a"), Small());
  ASSERT_TRUE(a.ok());
  int fd = open(dir.Sub("a/grow.lock").c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ChildProcess holder([&] {
    flock(fd, LOCK_EX);
    pause();
    return 0;
  });
  auto id = (*a)->Grow();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, 1u);
  holder.Kill(SIGKILL);
  holder.Wait();
  close(fd);
}

}  // namespace
}  // namespace structd::shm
