// Many client processes register types in one channel at once: identical
// keys meet on one token, distinct keys get distinct tokens, nothing is
// lost or duplicated, and a key registered with two shapes is accepted
// once and refused otherwise.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "testing/daemon_process.h"
#include "testing/grpc_client.h"

namespace structd {
namespace {

struct Child {
  pid_t pid;
  FILE* out;
};

Child Spawn(const std::vector<std::string>& args) {
  int p[2];
  EXPECT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>("structd_test_register"));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(STRUCTD_TEST_REGISTER, argv.data());
    _exit(127);
  }
  close(p[1]);
  return {pid, fdopen(p[0], "r")};
}

TEST(RegistryConcurrencyTest, ParallelRegistrationsMeetAndNeverDuplicate) {
  structd::testing::DaemonProcess daemon;
  structd::testing::GrpcClient owner(daemon.target());
  v1::CreateChannelRequest create;
  create.set_name("types");
  v1::CreateChannelResponse created;
  ASSERT_TRUE(owner.registry().CreateChannel(owner.Ctx().get(), create, &created).ok());

  constexpr int kProcs = 12;
  constexpr int kKeys = 20;
  std::vector<Child> children;
  for (int p = 0; p < kProcs; ++p) {
    std::vector<std::string> args = {daemon.target(), "types",
                                     created.member_capability(),
                                     // "clash" gets a different shape in odd
                                     // processes.
                                     p % 2 ? "u32" : "u64"};
    for (int k = 0; k < kKeys; ++k) args.push_back("shared." + std::to_string(k));
    args.push_back("own." + std::to_string(p));
    args.push_back("clash");
    children.push_back(Spawn(args));
  }
  std::map<std::string, std::set<std::string>> tokens_by_key;
  int clash_ok = 0, clash_refused = 0;
  for (Child& c : children) {
    char line[256];
    while (fgets(line, sizeof line, c.out)) {
      std::istringstream in(line);
      std::string key, token;
      in >> key >> token;
      if (key == "clash") {
        (token == "ERROR" ? clash_refused : clash_ok)++;
        continue;
      }
      ASSERT_NE(token, "ERROR") << line;
      tokens_by_key[key].insert(token);
    }
    fclose(c.out);
    int status = 0;
    waitpid(c.pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  // Every shared key met on one token; every key has its own token.
  std::set<std::string> all_tokens;
  for (int k = 0; k < kKeys; ++k) {
    const auto& t = tokens_by_key["shared." + std::to_string(k)];
    EXPECT_EQ(t.size(), 1u) << "shared." << k;
    all_tokens.insert(t.begin(), t.end());
  }
  for (int p = 0; p < kProcs; ++p) {
    const auto& t = tokens_by_key["own." + std::to_string(p)];
    EXPECT_EQ(t.size(), 1u);
    all_tokens.insert(t.begin(), t.end());
  }
  EXPECT_EQ(all_tokens.size(), size_t{kKeys + kProcs});
  // "clash": whichever shape came first won; the other shape was refused.
  EXPECT_EQ(clash_ok + clash_refused, kProcs);
  EXPECT_TRUE(clash_ok == kProcs / 2) << clash_ok;
  // The registry holds exactly those types.
  v1::ListTypesRequest lt;
  lt.set_channel("types");
  v1::ListTypesResponse types;
  ASSERT_TRUE(owner.registry().ListTypes(owner.Ctx().get(), lt, &types).ok());
  EXPECT_EQ(types.types_size(), kKeys + kProcs + 1);
}

}  // namespace
}  // namespace structd
