// Channels whose arenas are sealed memfds kept in a descriptor store
// (arena_backing = "memfd"): what members can no longer do to the memory,
// and what a restart keeps.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/core.h"
#include "core/core_fixture.h"
#include "core/descriptor_store.h"
#include "structd/shm/field.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;

// systemd's store, in process: what Keep gets is what the next start is
// handed (Restart), unless the service was stopped (StopAndStart).
class InProcessStore final : public DescriptorStore {
 public:
  void Keep(const std::string& name, int fd) override { kept_[name] = base::UniqueFd(dup(fd)); }
  void Forget(const std::string& name) override {
    kept_.erase(name);
    forgotten_.push_back(name);
  }
  std::map<std::string, base::UniqueFd> Take(const std::string& prefix) override {
    std::map<std::string, base::UniqueFd> out;
    for (auto it = handed_.begin(); it != handed_.end();) {
      if (it->first.starts_with(prefix)) {
        out.emplace(it->first, std::move(it->second));
        it = handed_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }
  std::map<std::string, base::UniqueFd> TakeRest() override {
    std::map<std::string, base::UniqueFd> out;
    out.swap(handed_);
    return out;
  }
  void Restart() {
    handed_.clear();
    for (auto& [name, fd] : kept_) handed_[name] = base::UniqueFd(dup(fd.get()));
  }
  void StopAndStart() {
    kept_.clear();
    handed_.clear();
  }
  size_t KeptWithPrefix(const std::string& prefix) const {
    size_t n = 0;
    for (const auto& [name, fd] : kept_) n += name.starts_with(prefix);
    return n;
  }
  void Hand(const std::string& name, base::UniqueFd fd) { handed_[name] = std::move(fd); }
  const std::vector<std::string>& forgotten() const { return forgotten_; }

 private:
  std::map<std::string, base::UniqueFd> kept_;
  std::map<std::string, base::UniqueFd> handed_;
  std::vector<std::string> forgotten_;
};

class SealedArenaTest : public CoreFixture {
 protected:
  void SetUp() override {
    options_.descriptor_store = store_;
    options_.arena_memfd = true;
    CoreFixture::SetUp();
  }
  // The daemon restarts (crash, or systemctl restart): the store hands
  // back what it kept.
  void Restart() {
    store_->Restart();
    Reopen();
  }
  // A member's view of channel `ch`: its files from the daemon, as the
  // memory socket hands them out.
  std::unique_ptr<shm::Arena> MapAsMember(std::shared_ptr<Channel> ch) {
    auto arena = shm::Arena::OpenFrom(
        [ch](shm::ArenaFile f) { return ch->OpenArenaFile(f); }, "member", shm::Access::kReadWrite);
    EXPECT_TRUE(arena.ok()) << arena.status();
    return arena.ok() ? std::move(*arena) : nullptr;
  }
  std::string Prefix(const std::string& channel) {
    return ChannelArenaNames((*core_->Find(channel))->id()).prefix();
  }

  std::shared_ptr<InProcessStore> store_ = std::make_shared<InProcessStore>();
};

TEST_F(SealedArenaTest, AMemberCannotCutOrGrowTheMemoryItIsHanded) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "ch");
  EXPECT_FALSE(std::filesystem::exists(ChannelDir("ch") + "/arena"));
  for (shm::ArenaFile file : {shm::ArenaFile{}, shm::ArenaFile{0}}) {
    absl::StatusOr<base::UniqueFd> fd = ch->OpenArenaFile(file);
    ASSERT_TRUE(fd.ok()) << fd.status();
    struct stat st;
    ASSERT_EQ(fstat(fd->get(), &st), 0);
    EXPECT_EQ(ftruncate(fd->get(), st.st_size / 2), -1);
    EXPECT_EQ(errno, EPERM);
    EXPECT_EQ(ftruncate(fd->get(), st.st_size * 2), -1);
    EXPECT_EQ(errno, EPERM);
  }
  // The daemon never noticed: nothing to repair, nothing damaged.
  EXPECT_EQ(core_->RestoreFileSizes(), 0u);
  auto t = *ch->RegisterType("N", Node());
  EXPECT_TRUE(ch->Allocate(s.id, t.type->token, 4).ok());
}

TEST_F(SealedArenaTest, ARestartGetsTheMemoryBackFromTheStore) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "ch");
  auto t = *ch->RegisterType("N", Node());
  shm::Ref ref = (*ch->Allocate(s.id, t.type->token, 1))[0];
  ASSERT_TRUE(ch->SetRoot("kept", ref).ok());
  {
    auto member = MapAsMember(ch);
    ASSERT_NE(member, nullptr);
    auto inst = member->Resolve(ref);
    ASSERT_TRUE(inst.ok()) << inst.status();
    uint64_t v = 0x5EA1ED;
    std::memcpy(inst->payload(), &v, sizeof v);
  }
  std::string prefix = Prefix("ch");
  EXPECT_EQ(store_->KeptWithPrefix(prefix), 2u);  // header + extent 0
  std::ifstream meta(ChannelDir("ch") + "/meta.toml");
  std::stringstream text;
  text << meta.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("arena_backing = 'memfd'"));
  ch.reset();

  Restart();
  auto again = core_->Find("ch");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT((*again)->restore_repairs(), ::testing::IsEmpty());
  auto member = MapAsMember(*again);
  ASSERT_NE(member, nullptr);
  auto inst = member->Resolve(ref);
  ASSERT_TRUE(inst.ok()) << inst.status();
  uint64_t v = 0;
  std::memcpy(&v, inst->payload(), sizeof v);
  EXPECT_EQ(v, 0x5EA1EDu);
  EXPECT_TRUE(store_->forgotten().empty());
}

// A member shared the daemon's open file description (a dup): it could
// set O_APPEND on it, and the restart's repair writes then went to the end
// of the sealed file and failed, so the channel was not recovered.
TEST_F(SealedArenaTest, AMemberSettingFlagsOnItsDescriptorCannotBlockTheRepair) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  auto ch = *core_->Joined(s.id, "ch");
  for (shm::ArenaFile file : {shm::ArenaFile{}, shm::ArenaFile{0}}) {
    absl::StatusOr<base::UniqueFd> fd = ch->OpenArenaFile(file);
    ASSERT_TRUE(fd.ok()) << fd.status();
    ASSERT_EQ(fcntl(fd->get(), F_SETFL, O_APPEND), 0);
    void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
    ASSERT_NE(p, MAP_FAILED);
    std::memset(p, 0xEE, 64);  // the header's magic and geometry
    munmap(p, 4096);
    // Its own description only: the daemon's next descriptor has no O_APPEND.
    absl::StatusOr<base::UniqueFd> again = ch->OpenArenaFile(file);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(fcntl(again->get(), F_GETFL) & O_APPEND, 0);
  }
  ch.reset();
  Restart();
  auto restored = core_->Find("ch");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_FALSE((*restored)->restore_repairs().empty());
  EXPECT_TRUE(core_->Unrecovered().empty());
}

TEST_F(SealedArenaTest, AStopLosesTheInstancesButKeepsTheChannelAndSaysSo) {
  auto s = *core_->Attach(me_, "app");
  auto created = *core_->CreateChannel(s.id, "ch", 0, 0);
  auto ch = *core_->Joined(s.id, "ch");
  auto t = *ch->RegisterType("N", Node());
  const shm::TypeToken token = t.type->token;  // t points into this core's registry
  shm::Ref ref = (*ch->Allocate(s.id, token, 1))[0];
  ASSERT_TRUE(ch->SetRoot("kept", ref).ok());
  ch.reset();

  store_->StopAndStart();
  Reopen();
  auto again = core_->Find("ch");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_FALSE((*again)->restore_repairs().empty());
  EXPECT_THAT((*again)->restore_repairs()[0], HasSubstr("not handed back"));
  EXPECT_EQ((*again)->Stats().alloc.live_instances, 0u);
  // Types are kept; the channel takes new instances, kept in the store.
  auto s2 = *core_->Attach(me_, "app2");
  ASSERT_TRUE(core_->JoinChannel(s2.id, "ch", created.member_capability).ok());
  auto joined = *core_->Joined(s2.id, "ch");
  auto fresh = joined->Allocate(s2.id, token, 1);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_GE(store_->KeptWithPrefix(Prefix("ch")), 2u);
}

TEST_F(SealedArenaTest, ADroppedChannelIsForgottenByTheStore) {
  auto s = *core_->Attach(me_, "app");
  auto created = *core_->CreateChannel(s.id, "gone", 0, 0);
  std::string prefix = Prefix("gone");
  ASSERT_EQ(store_->KeptWithPrefix(prefix), 2u);
  core_->Detach(s.id);
  ASSERT_TRUE(core_->DropChannel("gone", created.owner_capability).ok());
  EXPECT_EQ(store_->KeptWithPrefix(prefix), 0u);
}

TEST_F(SealedArenaTest, WithoutAStoreTheChannelIsNotRecoveredAndItsMemoryIsKept) {
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "ch", 0, 0).ok());
  std::string prefix = Prefix("ch");
  options_.descriptor_store = nullptr;
  options_.arena_memfd = false;
  Reopen();
  EXPECT_FALSE(core_->Find("ch").ok());
  auto unrecovered = core_->Unrecovered();
  ASSERT_EQ(unrecovered.size(), 1u);
  EXPECT_THAT(unrecovered[0].reason, HasSubstr("descriptor store"));
  // With the store back, the channel is.
  options_.descriptor_store = store_;
  Restart();
  EXPECT_TRUE(core_->Find("ch").ok());
  EXPECT_EQ(store_->KeptWithPrefix(prefix), 2u);
}

// Each sealed arena file costs the daemon a descriptor and systemd's
// store a slot: without a bound, one uid making many small channels ran
// both out, for everyone.
TEST_F(SealedArenaTest, ArenaFilesAreBoundedPerUidAndInTotal) {
  options_.quotas.max_arena_files_per_uid = 4;  // two channels of header + 1 extent
  Reopen();
  auto s = *core_->Attach(me_, "app");
  ASSERT_TRUE(core_->CreateChannel(s.id, "a", 0, 0).ok());
  ASSERT_TRUE(core_->CreateChannel(s.id, "b", 0, 0).ok());
  auto third = core_->CreateChannel(s.id, "c", 0, 0);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("max_arena_files_per_uid"));
  bool reported = false;
  for (const QuotaUse& u : core_->Quotas()) {
    if (u.quota == "max_arena_files") {
      reported = true;
      EXPECT_EQ(u.used, 4u);
    }
  }
  EXPECT_TRUE(reported);
  options_.quotas.max_arena_files_per_uid = 100;
  options_.quotas.max_arena_files = 5;
  Restart();  // counted again from what the arenas hold
  auto s2 = *core_->Attach(me_, "app2");
  auto over = core_->CreateChannel(s2.id, "c", 0, 0);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(), HasSubstr("max_arena_files:"));
}

TEST_F(SealedArenaTest, DescriptorsOfNoChannelAreForgottenAtStart) {
  store_->Hand("arena.00000000deadbeef.header", base::UniqueFd(memfd_create("x", 0)));
  Reopen();
  EXPECT_THAT(store_->forgotten(), ::testing::Contains("arena.00000000deadbeef.header"));
}

}  // namespace
}  // namespace structd::server
