// The client end of the memory socket against a fake daemon that breaks
// the protocol: a reply with two descriptors is refused and both are
// closed (the review found they leaked).

#include "client/src/memory_socket.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/base/length_prefix.h"
#include "structd/v1/memory.pb.h"
#include "testing/temp_dir.h"

namespace structd::client::internal {
namespace {

int OpenDescriptors() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

TEST(MemorySocketTest, AReplyWithTwoDescriptorsIsRefusedAndBothAreClosed) {
  structd::testing::TempDir dir;
  std::string path = dir.Sub("fake.mem.sock");
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  int before = OpenDescriptors();  // the fake's own descriptors are closed by the end
  std::thread fake([&] {
    int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    char buf[512];
    (void)!recv(c, buf, sizeof buf, 0);  // the request
    v1::MemoryReply ok;
    ok.set_size(4096);
    std::string frame = base::Frame(ok.SerializeAsString());
    int fds[2] = {open("/dev/null", O_RDONLY | O_CLOEXEC), open("/dev/null", O_RDONLY | O_CLOEXEC)};
    iovec iov{frame.data(), frame.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof fds);
    std::memcpy(CMSG_DATA(cm), fds, sizeof fds);
    (void)!sendmsg(c, &msg, MSG_NOSIGNAL);
    close(fds[0]);
    close(fds[1]);
    (void)!recv(c, buf, sizeof buf, 0);  // until the client hangs up
    close(c);
  });
  {
    MemorySocket memory(path, std::nullopt);
    auto fd = memory.Fetch("s", "", "ch", shm::ArenaFile{});
    EXPECT_EQ(fd.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(fd.status().message(), ::testing::HasSubstr("2 descriptors"));
  }
  fake.join();
  EXPECT_EQ(OpenDescriptors(), before) << "a received descriptor leaked";
  close(listener);
}

}  // namespace
}  // namespace structd::client::internal
