// The channel wall for clients of other uids (issue 16): who may connect,
// what a process that never joined can reach, a squatted runtime
// directory, a daemon impersonated by another user. Each test drops to an
// unused uid in a forked child (tests/testing/other_uid.h), so it needs
// root, and is reported SKIPPED otherwise.

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/client/client.h"
#include "testing/child_process.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/other_uid.h"
#include "testing/unix_socket.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;

class OtherUidTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CanSwitchUid()) GTEST_SKIP() << "needs root to act as another uid";
  }
};

// errno of connect(2) to `path`, 0 on success.
int ConnectErrno(const std::string& path) {
  int fd = ConnectUnix(path);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

// errno of open(2) of `path` for reading, 0 if it opened.
int OpenErrno(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

// A directory under /dev/shm (reachable by every uid) owned by `uid`,
// removed at the end.
class SharedDir {
 public:
  explicit SharedDir(uid_t uid, gid_t gid, mode_t mode = 0700) {
    char tmpl[] = "/dev/shm/structd-uid-test-XXXXXX";
    path_ = mkdtemp(tmpl) ? tmpl : "";
    if (!path_.empty()) {
      chown(path_.c_str(), uid, gid);
      chmod(path_.c_str(), mode);
    }
  }
  ~SharedDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// socket_group and socket_mode let one group in, and nobody else.
TEST_F(OtherUidTest, AnotherUidConnectsOnlyThroughTheSocketGroup) {
  DaemonProcess daemon({"--socket-mode", "0660", "--socket-group", std::to_string(kClientGid)});
  std::string dir = std::filesystem::path(daemon.socket()).parent_path();
  ASSERT_EQ(chmod(dir.c_str(), 0711), 0);  // the test's temp dir: let them reach the socket
  struct stat st;
  ASSERT_EQ(stat(daemon.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, kClientGid);

  int in_group = RunAsUid(kClientUid, kClientGid, [&] {
    try {
      GrpcClient c(daemon.target());
      v1::CreateChannelRequest create;
      create.set_name("theirs");
      v1::CreateChannelResponse created;
      if (!c.registry().CreateChannel(c.Ctx().get(), create, &created).ok()) return 2;
      // Joined or not, this uid is no operator: Admin is refused.
      grpc::ClientContext ctx;
      v1::GetStatusRequest req;
      v1::GetStatusResponse resp;
      grpc::Status s = c.admin().GetStatus(&ctx, req, &resp);
      if (s.error_code() != grpc::StatusCode::PERMISSION_DENIED) return 3;
      if (s.error_message().find("admin capability") == std::string::npos) return 4;
      return 0;
    } catch (const std::exception&) {
      return 1;
    }
  });
  EXPECT_EQ(in_group, 0);
  int stranger = RunAsUid(kStrangerUid, kStrangerGid, [&] {
    return ConnectErrno(daemon.socket()) == EACCES ? 0 : 1;
  });
  EXPECT_EQ(stranger, 0) << "a uid outside socket_group connected";
}

// The whole client library as another uid: the counters example (worker
// processes sharing counters in the arena) gets its memory as descriptors
// and never needs a path it could not open.
TEST_F(OtherUidTest, AClientOfAnotherUidSharesStructsThroughDescriptors) {
  DaemonProcess daemon({"--socket-mode", "0660", "--socket-group", std::to_string(kClientGid)});
  std::string dir = std::filesystem::path(daemon.socket()).parent_path();
  ASSERT_EQ(chmod(dir.c_str(), 0711), 0);
  SharedDir out_dir(0, 0, 0755);
  std::string out = out_dir.path() + "/out";
  ChildProcess example([&] {
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) return 97;
    if (setgroups(0, nullptr) != 0 || setresgid(kClientGid, kClientGid, kClientGid) != 0 ||
        setresuid(kClientUid, kClientUid, kClientUid) != 0) {
      return 98;
    }
    setenv("STRUCTD_SOCKET", daemon.socket().c_str(), 1);
    execl(STRUCTD_EXAMPLE_COUNTERS, "counters", "3", "2000", static_cast<char*>(nullptr));
    return 127;
  });
  int code = example.Wait(std::chrono::seconds(60));
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(code, 0) << text;
  EXPECT_THAT(text, HasSubstr("hits = 6000 (expected 6000)"));
}

// Registers a 16-byte type in `channel` and allocates `count` instances:
// the gRPC status code (0 OK), or 100 + step if a step before failed.
int Fill(GrpcClient& c, const std::string& channel, uint32_t count, std::string* message) {
  v1::RegisterTypeRequest reg;
  reg.set_channel(channel);
  reg.set_key("N");
  auto* f = reg.add_fields();
  f->set_name("v");
  f->set_type("u64");
  auto* g = reg.add_fields();
  g->set_name("w");
  g->set_type("u64");
  v1::RegisterTypeResponse t;
  if (!c.registry().RegisterType(c.Ctx().get(), reg, &t).ok()) return 101;
  v1::AllocateBatchRequest req;
  req.set_channel(channel);
  req.set_token(t.type().token());
  req.set_count(count);
  v1::AllocateBatchResponse resp;
  grpc::Status s = c.instances().AllocateBatch(c.Ctx().get(), req, &resp);
  *message = s.error_message();
  return s.error_code();
}

// One uid cannot take more than its share of memory; another uid's
// channel keeps growing meanwhile.
TEST_F(OtherUidTest, OneUidCannotTakeMoreThanItsShare) {
  DaemonProcess daemon({"--socket-mode", "0660", "--socket-group", std::to_string(kClientGid),
                        "--max-bytes-per-uid", std::to_string(2 << 20)});
  std::string dir = std::filesystem::path(daemon.socket()).parent_path();
  ASSERT_EQ(chmod(dir.c_str(), 0711), 0);
  int greedy = RunAsUid(kClientUid, kClientGid, [&] {
    GrpcClient c(daemon.target());
    if (!c.CreateChannel("greedy").ok()) return 1;
    std::string message;
    int code = Fill(c, "greedy", 100000, &message);  // ~4 MiB of 1 MiB extents
    if (code != static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) return 10 + code;
    return message.find("max_bytes_per_uid") != std::string::npos ? 0 : 3;
  });
  EXPECT_EQ(greedy, 0);
  // A second uid (in the socket group too) still gets its share.
  int modest = RunAsUid(kStrangerUid, kClientGid, [&] {
    GrpcClient c(daemon.target());
    if (!c.CreateChannel("modest").ok()) return 1;
    std::string message;
    return Fill(c, "modest", 40000, &message);  // two extents
  });
  EXPECT_EQ(modest, 0);
}

// A process of another uid that never joined cannot read the daemon's
// state: no capability, no ledger, no session record, no arena file.
TEST_F(OtherUidTest, ANonMemberCannotReachAnyChannelState) {
  DaemonProcess daemon({"--socket-mode", "0660", "--socket-group", std::to_string(kClientGid)});
  std::string dir = std::filesystem::path(daemon.socket()).parent_path();
  ASSERT_EQ(chmod(dir.c_str(), 0711), 0);
  std::string channel_dir;
  {
    GrpcClient owner(daemon.target());
    v1::CreateChannelRequest create;
    create.set_name("payroll");
    v1::CreateChannelResponse created;
    ASSERT_TRUE(owner.registry().CreateChannel(owner.Ctx().get(), create, &created).ok());
    channel_dir = daemon.state_dir() + "/channels/" + created.channel_id();
    ASSERT_TRUE(std::filesystem::exists(channel_dir + "/meta.toml"));
  }
  std::vector<std::string> secrets = {
      daemon.state_dir() + "/admin.capability", channel_dir + "/meta.toml",
      channel_dir + "/arena/arena", channel_dir + "/arena/extent.0",
      daemon.state_dir() + "/channels", daemon.state_dir() + "/sessions"};
  for (uid_t uid : {kClientUid, kStrangerUid}) {
    int code = RunAsUid(uid, uid, [&] {
      int n = 0;
      for (const std::string& path : secrets) {
        ++n;
        if (OpenErrno(path) != EACCES) return n;
      }
      return 0;
    });
    EXPECT_EQ(code, 0) << "uid " << uid << " could open "
                       << (code > 0 && code <= int(secrets.size()) ? secrets[code - 1] : "?");
  }
}

// Another user made the runtime directory first (the default when
// XDG_RUNTIME_DIR is unset is /tmp/structd-UID) and planted a symlink: the
// daemon refuses to start, names the owner, and writes nothing.
TEST_F(OtherUidTest, ASquattedRuntimeDirectoryIsRefused) {
  SharedDir squat(kStrangerUid, kStrangerGid, 0777);
  SharedDir victim(0, 0, 0700);
  ASSERT_FALSE(squat.path().empty());
  std::ofstream(victim.path() + "/precious") << "keep me";
  ASSERT_EQ(symlink(victim.path().c_str(), (squat.path() + "/state").c_str()), 0);

  std::string out;
  int code = RunDaemonToCompletion(
      {"--socket", squat.path() + "/structd.sock", "--state-dir", squat.path() + "/state"}, &out);
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("owned by uid " + std::to_string(kStrangerUid)));
  // The state directory was fine, the socket's was not.
  SharedDir good(0, 0, 0700);
  code = RunDaemonToCompletion(
      {"--socket", squat.path() + "/structd.sock", "--state-dir", good.path() + "/state"}, &out);
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("socket"));
  EXPECT_THAT(out, HasSubstr("uid " + std::to_string(kStrangerUid)));
  EXPECT_FALSE(std::filesystem::exists(squat.path() + "/structd.sock"));
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(victim.path())) {
    left.push_back(e.path().filename());
  }
  EXPECT_EQ(left, std::vector<std::string>{"precious"});
}

// The squatter plants a symlink instead of a directory, pointing at a
// place that passes every check (/dev/shm: root's, sticky). It owns the
// link, so it could repoint it later: the daemon and clients refuse it.
TEST_F(OtherUidTest, ASquattedSymlinkToATrustedDirectoryIsRefused) {
  char tmpl[] = "/dev/shm/structd-link-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string link = tmpl;
  std::filesystem::remove(link);
  ASSERT_EQ(symlink("/dev/shm", link.c_str()), 0);
  ASSERT_EQ(lchown(link.c_str(), kStrangerUid, kStrangerGid), 0);
  struct Cleanup {
    std::string link;
    ~Cleanup() { unlink(link.c_str()); }
  } cleanup{link};
  std::string out;
  std::string state = "state-" + std::filesystem::path(link).filename().string();
  int code = RunDaemonToCompletion(
      {"--socket", link + "/structd.sock", "--state-dir", link + "/" + state}, &out);
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("owned by uid " + std::to_string(kStrangerUid)));
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + state));
  // A client given a socket path through the link refuses it too, even
  // though a real daemon answers at the end of it.
  DaemonProcess daemon;
  ASSERT_EQ(unlink(link.c_str()), 0);
  std::string dir = std::filesystem::path(daemon.socket()).parent_path();
  ASSERT_EQ(symlink(dir.c_str(), link.c_str()), 0);
  ASSERT_EQ(lchown(link.c_str(), kStrangerUid, kStrangerGid), 0);
  client::ClientOptions options;
  options.socket = link + "/structd.sock";
  auto refused = client::Client::Connect(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(), HasSubstr("impersonating"));
}

// A daemon run by another user where the client's would be (the socket
// swapped by a squatter): the client sends it nothing secret, unless told
// that uid is the daemon's.
TEST_F(OtherUidTest, AClientRefusesADaemonOfAnUntrustedUid) {
  SharedDir home(kStrangerUid, kStrangerGid, 0700);
  std::string socket = home.path() + "/structd.sock";
  ChildProcess impostor([&] {
    if (setgroups(0, nullptr) != 0 || setresgid(kStrangerGid, kStrangerGid, kStrangerGid) != 0 ||
        setresuid(kStrangerUid, kStrangerUid, kStrangerUid) != 0) {
      return 98;
    }
    std::string bin = DaemonPath(), state = home.path() + "/state";
    execl(bin.c_str(), bin.c_str(), "--socket", socket.c_str(), "--state-dir", state.c_str(),
          "--socket-mode", "0666", "--log-level", "warn", static_cast<char*>(nullptr));
    return 127;
  });
  // Root may enter the 0700 directory; wait for the socket to answer.
  for (int i = 0; i < 200 && ConnectErrno(socket) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(ConnectErrno(socket), 0) << "the impostor daemon did not start";

  client::ClientOptions options;
  options.socket = socket;
  options.connect_timeout = std::chrono::milliseconds(3000);
  auto refused = client::Client::Connect(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(), HasSubstr("impersonating"));
  EXPECT_THAT(refused.status().message(), HasSubstr(std::to_string(kStrangerUid)));
  // Told that this uid runs the daemon, the client goes ahead.
  options.daemon_uid = kStrangerUid;
  auto trusted = client::Client::Connect(options);
  EXPECT_TRUE(trusted.ok()) << trusted.status();
}

}  // namespace
}  // namespace structd::testing
