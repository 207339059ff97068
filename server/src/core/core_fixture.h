#ifndef STRUCTD_SERVER_CORE_CORE_FIXTURE_H_
#define STRUCTD_SERVER_CORE_CORE_FIXTURE_H_

// The fixture of the domain core's tests: a Core on a private state
// directory, reopened the way a daemon restarted after SIGKILL reopens it.

#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/core.h"
#include "testing/temp_dir.h"

namespace structd::server {

class CoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.state_dir = dir_.path();
    options_.arena.extent_size = 1 << 20;
    options_.arena.max_extents = 8;
    me_.known = true;
    me_.pid = getpid();
    me_.uid = getuid();
    me_.process = ProcessHandle::OfPid(getpid());
    Reopen();
  }
  // Opens the core on options_.state_dir; the previous core is dropped
  // without ending its sessions, as a daemon killed with SIGKILL would.
  void Reopen() {
    core_.reset();
    auto c = Core::Open(options_);
    ASSERT_TRUE(c.ok()) << c.status();
    core_ = std::move(*c);
  }
  // Credentials of another process (a child of the test), bound to it.
  PeerCredentials PeerOf(pid_t pid) {
    PeerCredentials p = me_;
    p.pid = pid;
    p.process = ProcessHandle::OfPid(pid);
    EXPECT_NE(p.process, nullptr);
    return p;
  }
  std::string Attach(const std::string& name = "test") {
    auto s = core_->Attach(me_, name);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->id : "";
  }
  std::vector<shm::FieldSpec> Point() {
    return {shm::FieldSpec::Scalar("x", shm::FieldKind::kF64),
            shm::FieldSpec::Scalar("y", shm::FieldKind::kF64)};
  }
  std::vector<shm::FieldSpec> Node() {
    return {shm::FieldSpec::Scalar("v", shm::FieldKind::kU64), shm::FieldSpec::Ref("next")};
  }
  // The directory of channel `name`.
  std::string ChannelDir(const std::string& name) {
    return options_.state_dir + "/channels/" + (*core_->Find(name))->id();
  }

  structd::testing::TempDir dir_;
  CoreOptions options_;
  std::unique_ptr<Core> core_;
  PeerCredentials me_;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_CORE_FIXTURE_H_
