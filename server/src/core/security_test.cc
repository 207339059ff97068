// The walls the domain core builds itself (doc/security.md): secrets kept
// only as digests, admin calls for root or the admin capability, sessions
// bound to their process (or connection), state directories nobody else
// controls.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/core_fixture.h"
#include "core/meta_store.h"
#include "core/private_dir.h"
#include "testing/child_process.h"
#include "testing/other_uid.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;
using structd::testing::CanSwitchUid;
using structd::testing::ChildProcess;
using structd::testing::kClientGid;
using structd::testing::kClientUid;
using structd::testing::kStrangerGid;
using structd::testing::kStrangerUid;
using structd::testing::RunAsUid;

class SecurityTest : public CoreFixture {};

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every file under the state directory except the operator's copy of the
// admin capability.
std::string StateFiles(const std::string& dir) {
  std::string all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().filename() == "admin.capability") continue;
    all += ReadAll(e.path());
  }
  return all;
}

TEST_F(SecurityTest, NoCapabilityOrSessionSecretIsStoredInClear) {
  auto session = core_->Attach(me_, "app");
  ASSERT_TRUE(session.ok());
  auto created = core_->CreateChannel(session->id, "payroll", 0, 0);
  ASSERT_TRUE(created.ok());
  auto ch = *core_->Joined(session->id, "payroll");
  ASSERT_TRUE(ch->RegisterType("N", Node()).ok());  // a journal line too
  std::string files = StateFiles(dir_.path());
  ASSERT_THAT(files, HasSubstr("payroll"));  // the files were read
  EXPECT_EQ(files.find(created->owner_capability), std::string::npos);
  EXPECT_EQ(files.find(created->member_capability), std::string::npos);
  EXPECT_EQ(files.find(session->secret), std::string::npos);
  // ... and yet a restarted daemon still knows them.
  ch.reset();
  Reopen();
  auto back = core_->Attach(me_, "app", session->id, session->secret);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->id, session->id);
  EXPECT_EQ(back->secret, session->secret);
  EXPECT_TRUE(core_->OwnedChannel("payroll", created->owner_capability).ok());
  EXPECT_EQ(core_->OwnedChannel("payroll", created->member_capability).status().code(),
            absl::StatusCode::kPermissionDenied);
}

// meta.toml of an older daemon held the capabilities in clear: they still
// work, and the file is rewritten without them.
TEST_F(SecurityTest, ClearTextCapabilitiesOfAnOlderDaemonAreRewrittenAsDigests) {
  std::string dir = dir_.Sub("old");
  std::filesystem::create_directories(dir);
  ChannelMeta m;
  m.id = "0123456789abcdef";
  m.name = "old";
  m.owner_capability = SecretDigest::Of("x");
  m.member_capability = SecretDigest::Of("y");
  ASSERT_TRUE(MetaStore::Create(dir, m).ok());
  std::string text = ReadAll(dir + "/meta.toml");
  std::string owner_line = "owner_capability_sha256 = '" + m.owner_capability.ToHex() + "'";
  std::string member_line = "member_capability_sha256 = '" + m.member_capability.ToHex() + "'";
  ASSERT_THAT(text, HasSubstr(owner_line));
  text.replace(text.find(owner_line), owner_line.size(),
               "owner_capability = \"0wner0wner0wner0wner0wner0wner00\"");
  text.replace(text.find(member_line), member_line.size(),
               "member_capability = \"memb3rmemb3rmemb3rmemb3rmemb3r00\"");
  std::ofstream(dir + "/meta.toml", std::ios::trunc) << text;

  auto store = MetaStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->meta().owner_capability.Matches("0wner0wner0wner0wner0wner0wner00"));
  EXPECT_TRUE((*store)->meta().member_capability.Matches("memb3rmemb3rmemb3rmemb3rmemb3r00"));
  std::string rewritten = ReadAll(dir + "/meta.toml");
  EXPECT_THAT(rewritten, HasSubstr("owner_capability_sha256"));
  EXPECT_EQ(rewritten.find("0wner0wner"), std::string::npos);
  EXPECT_EQ(rewritten.find("memb3rmemb3r"), std::string::npos);
}

TEST_F(SecurityTest, AdminCallsNeedRootOrTheAdminCapability) {
  std::string capability = ReadAll(dir_.Sub("admin.capability"));
  ASSERT_EQ(capability.size(), 32u);
  PeerCredentials root = me_;
  root.uid = 0;
  EXPECT_TRUE(core_->AuthorizeAdmin(root, "").ok());
  PeerCredentials user = me_;
  user.uid = kClientUid;
  EXPECT_TRUE(core_->AuthorizeAdmin(user, capability).ok());
  absl::Status refused = core_->AuthorizeAdmin(user, "");
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.message(), HasSubstr("admin.capability"));
  EXPECT_EQ(core_->AuthorizeAdmin(user, std::string(32, 'a')).code(),
            absl::StatusCode::kPermissionDenied);
}

// The daemon's own uid is no longer enough (it was: any process of that
// uid could read every channel). Needs a daemon that is not root.
TEST_F(SecurityTest, TheDaemonsOwnUidIsNotAnAdmin) {
  if (!CanSwitchUid()) GTEST_SKIP() << "needs root to run a daemon core as another uid";
  // Not under dir_ (0700, root's): the other uid could not reach it.
  char tmpl[] = "/dev/shm/structd-uid-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{dir};
  ASSERT_EQ(chown(dir.c_str(), kClientUid, kClientGid), 0);
  int code = RunAsUid(kClientUid, kClientGid, [&] {
    CoreOptions o;
    o.state_dir = dir + "/state";
    auto core = Core::Open(o);
    if (!core.ok()) return 10;
    PeerCredentials same_uid{true, getpid(), getuid(), getgid(), nullptr, 0};
    if ((*core)->AuthorizeAdmin(same_uid, "").code() != absl::StatusCode::kPermissionDenied) {
      return 11;
    }
    std::ifstream in(o.state_dir + "/admin.capability");
    std::string capability;
    in >> capability;
    return (*core)->AuthorizeAdmin(same_uid, capability).ok() ? 0 : 12;
  });
  EXPECT_EQ(code, 0);
}

TEST_F(SecurityTest, APeerWithoutAPidfdIsRefusedByDefault) {
  PeerCredentials unbound = me_;
  unbound.pid = 0;
  unbound.process = nullptr;
  auto s = core_->Attach(unbound, "hidden");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.status().message(), HasSubstr("allow_unbound_peers"));
}

// With allow_unbound_peers, a session the daemon cannot tie to a process
// is tied to its connection: its id replayed from elsewhere is refused.
TEST_F(SecurityTest, AnUnboundSessionAcceptsCallsOnlyFromItsConnection) {
  options_.allow_unbound_peers = true;
  Reopen();
  PeerCredentials unbound = me_;
  unbound.pid = 0;
  unbound.process = nullptr;
  unbound.connection = 1111;
  auto s = core_->Attach(unbound, "hidden");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(core_->CheckSession(s->id, unbound).ok());
  PeerCredentials replay = unbound;
  replay.connection = 2222;
  absl::Status refused = core_->CheckSession(s->id, replay);
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.message(), HasSubstr("connection"));
  replay.connection = 0;
  EXPECT_EQ(core_->CheckSession(s->id, replay).code(), absl::StatusCode::kPermissionDenied);
}

// Two processes whose pids the daemon cannot see (pid 0 for both) are told
// apart by their pidfds: a replayed session id is refused.
TEST_F(SecurityTest, InvisiblePidsAreToldApartByTheProcessItself) {
  ChildProcess other([] {
    pause();
    return 0;
  });
  PeerCredentials mine = me_;
  mine.pid = 0;
  auto s = core_->Attach(mine, "hidden");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(core_->CheckSession(s->id, mine).ok());
  PeerCredentials theirs = me_;
  theirs.pid = 0;
  theirs.process = ProcessHandle::OfPid(other.pid());
  ASSERT_NE(theirs.process, nullptr);
  EXPECT_EQ(core_->CheckSession(s->id, theirs).code(), absl::StatusCode::kPermissionDenied);
  theirs.process = nullptr;
  EXPECT_EQ(core_->CheckSession(s->id, theirs).code(), absl::StatusCode::kPermissionDenied);
}

// Another user created the state directory (or one above it) first: the
// daemon refuses it instead of keeping its secrets there.
TEST_F(SecurityTest, AStateDirectoryAnotherUserControlsIsRefused) {
  if (!CanSwitchUid()) GTEST_SKIP() << "needs root to make directories of another uid";
  std::string squatted = dir_.Sub("squatted");
  std::filesystem::create_directories(squatted);
  ASSERT_EQ(chown(squatted.c_str(), kStrangerUid, kStrangerGid), 0);
  CoreOptions o = options_;
  o.state_dir = squatted;
  auto core = Core::Open(o);
  ASSERT_FALSE(core.ok());
  EXPECT_EQ(core.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(core.status().message(), HasSubstr("owned by uid 61002"));
  // Below it: the stranger could rename what the daemon made.
  o.state_dir = squatted + "/state";
  core = Core::Open(o);
  ASSERT_FALSE(core.ok());
  EXPECT_THAT(core.status().message(), HasSubstr("owned by uid 61002"));
  EXPECT_FALSE(std::filesystem::exists(squatted + "/state"));
  // A world-writable directory that is not sticky is no better.
  std::string open_dir = dir_.Sub("open");
  std::filesystem::create_directories(open_dir);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  o.state_dir = open_dir + "/state";
  core = Core::Open(o);
  ASSERT_FALSE(core.ok());
  EXPECT_THAT(core.status().message(), HasSubstr("writable by group or others"));
}

TEST_F(SecurityTest, AStateDirectoryThatIsASymlinkIsNotFollowed) {
  std::string victim = dir_.Sub("victim");
  std::filesystem::create_directories(victim);
  std::ofstream(victim + "/precious") << "keep me";
  std::string link = dir_.Sub("link");
  ASSERT_EQ(symlink(victim.c_str(), link.c_str()), 0);
  EXPECT_EQ(MakePrivateDir(link).code(), absl::StatusCode::kPermissionDenied);
  CoreOptions o = options_;
  o.state_dir = link;
  EXPECT_FALSE(Core::Open(o).ok());
  EXPECT_FALSE(std::filesystem::exists(victim + "/channels"));
  EXPECT_FALSE(std::filesystem::exists(victim + "/admin.capability"));
  EXPECT_EQ(ReadAll(victim + "/precious"), "keep me");
}

// A symlink planted where the daemon writes a file is replaced, never
// written through.
TEST_F(SecurityTest, APlantedSymlinkIsReplacedNotWrittenThrough) {
  std::string victim = dir_.Sub("victim-file");
  std::ofstream(victim) << "keep me";
  std::string state = dir_.Sub("state2");
  ASSERT_TRUE(MakePrivateDir(state).ok());
  ASSERT_EQ(symlink(victim.c_str(), (state + "/admin.capability").c_str()), 0);
  CoreOptions o = options_;
  o.state_dir = state;
  auto core = Core::Open(o);
  ASSERT_TRUE(core.ok()) << core.status();
  EXPECT_EQ(ReadAll(victim), "keep me");
  struct stat st;
  ASSERT_EQ(lstat((state + "/admin.capability").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

}  // namespace
}  // namespace structd::server
