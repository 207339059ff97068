#include "structd/shm/arena_storage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/shm/arena.h"

namespace structd::shm {
namespace {

using ::testing::HasSubstr;

ArenaOptions Small(uint32_t initial = 1) {
  ArenaOptions o;
  o.extent_size = 128 * 1024;
  o.max_extents = 8;
  o.initial_extents = initial;
  return o;
}

// Plays the descriptor store a daemon hands its memfds to (systemd's, in
// production): keeps a dup of each published file, forgets on request.
struct FakeKeeper {
  std::map<ArenaFile, base::UniqueFd> kept;
  int forgotten = 0;

  SealedMemoryStorage::Keeper keeper() {
    return {[this](ArenaFile f, int fd) { kept[f] = base::UniqueFd(dup(fd)); },
            [this](ArenaFile f) {
              kept.erase(f);
              ++forgotten;
            }};
  }
  std::map<ArenaFile, base::UniqueFd> HandBack() {
    std::map<ArenaFile, base::UniqueFd> out;
    for (auto& [f, fd] : kept) out[f] = base::UniqueFd(dup(fd.get()));
    return out;
  }
};

std::unique_ptr<SealedMemoryStorage> Sealed(FakeKeeper& k,
                                            std::map<ArenaFile, base::UniqueFd> kept = {}) {
  return std::make_unique<SealedMemoryStorage>("test", k.keeper(), std::move(kept));
}

TEST(SealedMemoryStorageTest, ADescriptorHolderCannotCutOrGrowAnExtentOrTheHeader) {
  FakeKeeper k;
  auto arena = Arena::Create(Sealed(k), Small(2));
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ(k.kept.size(), 3u);  // header + 2 extents handed to the keeper
  absl::StatusOr<uint8_t*> base = (*arena)->ExtentBase(1);
  ASSERT_TRUE(base.ok()) << base.status();
  const uint64_t size = (*arena)->extent_size();
  std::memcpy(*base + size - 8, "survives", 8);

  // What a member gets over the memory socket.
  for (ArenaFile file : {ArenaFile{1}, ArenaFile{}}) {
    absl::StatusOr<base::UniqueFd> fd = (*arena)->OpenFile(file);
    ASSERT_TRUE(fd.ok()) << fd.status();
    struct stat st;
    ASSERT_EQ(fstat(fd->get(), &st), 0);
    const off_t full = st.st_size;
    EXPECT_EQ(ftruncate(fd->get(), full / 2), -1);
    EXPECT_EQ(errno, EPERM);
    EXPECT_EQ(ftruncate(fd->get(), full * 2), -1);
    EXPECT_EQ(errno, EPERM);
    EXPECT_NE(fallocate(fd->get(), FALLOC_FL_KEEP_SIZE, full, 1 << 20), 0);
    EXPECT_EQ(fcntl(fd->get(), F_ADD_SEALS, 0), -1) << "the seals themselves are sealed";
    ASSERT_EQ(fstat(fd->get(), &st), 0);
    EXPECT_EQ(st.st_size, full);
  }
  // The mapping was never disturbed.
  EXPECT_TRUE((*arena)->Intact().ok());
  EXPECT_EQ(std::memcmp(*base + size - 8, "survives", 8), 0);
  EXPECT_TRUE((*arena)->RestoreFileSizes().empty());
}

TEST(SealedMemoryStorageTest, AnArenaComesBackFromItsKeptDescriptors) {
  FakeKeeper k;
  ArenaIdentity identity;
  {
    auto arena = Arena::Create(Sealed(k), Small(1));
    ASSERT_TRUE(arena.ok()) << arena.status();
    ASSERT_TRUE((*arena)->Grow().ok());
    absl::StatusOr<uint8_t*> base = (*arena)->ExtentBase(1);
    ASSERT_TRUE(base.ok());
    std::memcpy(*base + (*arena)->extent_size() - 8, "kept-it!", 8);
    identity = (*arena)->identity();
  }  // the owner is gone; only the keeper holds the memory now
  std::vector<std::string> repairs;
  auto again = Arena::Adopt(Sealed(k, k.HandBack()), identity, &repairs);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(repairs, ::testing::IsEmpty());
  EXPECT_EQ((*again)->extent_count(), 2u);
  EXPECT_EQ((*again)->epoch(), identity.epoch);
  absl::StatusOr<uint8_t*> base = (*again)->ExtentBase(1);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(std::memcmp(*base + (*again)->extent_size() - 8, "kept-it!", 8), 0);
  // It still grows, and the new extent reaches the keeper too.
  ASSERT_TRUE((*again)->Grow().ok());
  EXPECT_EQ(k.kept.size(), 4u);
}

TEST(SealedMemoryStorageTest, LostDescriptorsComeBackAsAnEmptyArenaWithTheSameIdentity) {
  FakeKeeper k;
  ArenaIdentity identity;
  {
    auto arena = Arena::Create(Sealed(k), Small(1));
    ASSERT_TRUE(arena.ok()) << arena.status();
    identity = (*arena)->identity();
  }
  // The keeper lost them (systemd 252 empties its store when the service
  // is stopped rather than restarted).
  std::vector<std::string> repairs;
  auto again = Arena::Adopt(Sealed(k), identity, &repairs);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->epoch(), identity.epoch);
  EXPECT_EQ((*again)->extent_count(), 0u);
  ASSERT_FALSE(repairs.empty());
  EXPECT_THAT(repairs[0], HasSubstr("missing"));
}

TEST(SealedMemoryStorageTest, AKeptDescriptorThatIsNotSealedIsLeftOut) {
  FakeKeeper k;
  std::map<ArenaFile, base::UniqueFd> kept;
  kept[ArenaFile{}] = base::UniqueFd(memfd_create("foreign", MFD_CLOEXEC));
  ASSERT_TRUE(kept[ArenaFile{}]);
  ASSERT_EQ(ftruncate(kept[ArenaFile{}].get(), 4096), 0);
  auto storage = Sealed(k, std::move(kept));
  EXPECT_EQ(storage->Check().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(storage->Check().message(), HasSubstr("not a sealed memfd"));
  EXPECT_EQ(storage->Open(ArenaFile{}, Access::kReadOnly).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SealedMemoryStorageTest, RemoveAllTellsTheKeeperToForgetEveryFile) {
  FakeKeeper k;
  auto storage = Sealed(k);
  SealedMemoryStorage* raw = storage.get();
  auto arena = Arena::Create(std::move(storage), Small(2));
  ASSERT_TRUE(arena.ok()) << arena.status();
  ASSERT_EQ(k.kept.size(), 3u);
  raw->RemoveAll();
  EXPECT_EQ(k.forgotten, 3);
  EXPECT_TRUE(k.kept.empty());
}

TEST(DirectoryStorageTest, PublishNeverReplacesAFile) {
  char tmpl[] = "/tmp/structd-storage-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  auto storage = DirectoryStorage(tmpl);
  absl::StatusOr<PreparedFile> a = storage->Prepare(ArenaFile{3}, 4096);
  absl::StatusOr<PreparedFile> b = storage->Prepare(ArenaFile{3}, 4096);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(storage->Publish(ArenaFile{3}, *a).ok());
  EXPECT_EQ(storage->Publish(ArenaFile{3}, *b).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(storage->ExtentIds(), std::vector<uint32_t>{3});
  EXPECT_FALSE(storage->sizes_sealed());
  // What else the caller keeps there survives RemoveAll.
  std::string other = std::string(tmpl) + "/notes.txt";
  FILE* f = fopen(other.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  storage->RemoveAll();
  EXPECT_TRUE(storage->ExtentIds().empty());
  EXPECT_EQ(access(other.c_str(), F_OK), 0);
  unlink(other.c_str());
  rmdir(tmpl);
}

}  // namespace
}  // namespace structd::shm
