// Hostile clients of the memory socket (issue 16): random frames, half
// frames left hanging, replies never read, more connections than allowed.
// The daemon never dies, never blocks on one client, and keeps handing an
// honest member its descriptors. Seeds: STRUCTD_TEST_SEED; longer:
// STRUCTD_FAULT_SCALE.

#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "structd/base/length_prefix.h"
#include "testing/child_process.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/shm_fixture.h"
#include "testing/unix_socket.h"

namespace structd::testing {
namespace {



class HostileMemorySocketTest : public ::testing::Test {
 protected:
  HostileMemorySocketTest()
      : daemon_({"--idle-connection-ms", "300", "--max-connections-per-process", "16",
                 "--arena-backing", "files"}) {}
  void SetUp() override {
    honest_ = std::make_unique<GrpcClient>(daemon_.target());
    ASSERT_TRUE(honest_->CreateChannel("ch").ok());
  }
  // The honest member still gets a descriptor, promptly.
  void ExpectHonestServed() {
    auto start = std::chrono::steady_clock::now();
    auto fd = honest_->FetchArenaFile("ch", shm::ArenaFile{});
    EXPECT_TRUE(fd.ok()) << fd.status();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
  // Runs `hostile` in a child process (its own connection quota, no gRPC
  // after fork) while the honest member keeps asking; the child's code.
  int WhileHostile(const std::function<int()>& hostile) {
    ChildProcess child(hostile);
    for (int i = 0; i < 5; ++i) {
      ExpectHonestServed();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return child.Wait(std::chrono::seconds(60));
  }

  DaemonProcess daemon_;
  std::unique_ptr<GrpcClient> honest_;
};

TEST_F(HostileMemorySocketTest, RandomFramesNeverHurtTheDaemon) {
  uint64_t seed = TestSeed();
  int rounds = 200 * FaultScale();
  std::string path = honest_->memory_socket();
  int code = WhileHostile([&] {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < rounds; ++i) {
      int fd = ConnectUnix(path);
      if (fd < 0) return 1;  // the daemon stopped accepting
      std::string bytes;
      switch (rng() % 4) {
        case 0: {  // random bytes, length prefix included
          bytes.resize(1 + rng() % 64);
          for (char& ch : bytes) ch = static_cast<char>(rng());
          break;
        }
        case 1: {  // a well-framed body of random bytes (maybe a valid message)
          std::string body(1 + rng() % 128, '\0');
          for (char& ch : body) ch = static_cast<char>(rng());
          bytes = base::Frame(body);
          break;
        }
        case 2:  // a huge length
          bytes = std::string("\xff\xff\xff\x7f", 4) + "xyz";
          break;
        default: {  // a real request for an unknown session, cut short
          v1::MemoryRequest r;
          r.set_session_id("0123456789abcdef0123456789abcdef");
          r.set_channel("ch");
          std::string body;
          r.SerializeToString(&body);
          bytes = base::Frame(body).substr(0, 1 + rng() % (body.size() + 3));
          break;
        }
      }
      send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      close(fd);
    }
    return 0;
  });
  EXPECT_EQ(code, 0);
  ExpectHonestServed();
  EXPECT_TRUE(daemon_.running());
}

// Connections that never finish a frame are closed after
// idle_connection_ms; past max_connections_per_process one is refused.
TEST_F(HostileMemorySocketTest, HangingAndExcessConnectionsAreShed) {
  std::string path = honest_->memory_socket();
  int code = WhileHostile([&] {
    std::vector<int> hanging;
    for (int i = 0; i < 40; ++i) {
      int fd = ConnectUnix(path);
      if (fd < 0) return 1;
      send(fd, "\x10\x00", 2, MSG_NOSIGNAL);  // half a length prefix
      hanging.push_back(fd);
    }
    // Every hanging connection is closed by the daemon within a few idle
    // periods (EOF), or was refused at once (a reply, then EOF).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    size_t closed = 0;
    for (int fd : hanging) {
      pollfd p{fd, POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      char buf[256];
      while (poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 1))) > 0) {
        if (recv(fd, buf, sizeof buf, 0) <= 0) {
          ++closed;
          break;
        }
      }
      close(fd);
    }
    return closed == hanging.size() ? 0 : 2;
  });
  EXPECT_EQ(code, 0) << "a hanging connection was never closed";
  ExpectHonestServed();
}

// A client that sends requests and never reads the replies (each with a
// descriptor) is dropped rather than waited for.
TEST_F(HostileMemorySocketTest, AClientThatNeverReadsIsDroppedNotWaitedFor) {
  v1::MemoryRequest r;
  r.set_session_id(honest_->session_id());
  r.set_channel("ch");
  std::string body;
  r.SerializeToString(&body);
  std::string frame = base::Frame(body);
  int fd = ConnectUnix(honest_->memory_socket());
  ASSERT_GE(fd, 0);
  std::string many;
  for (int i = 0; i < 20000; ++i) many += frame;
  // Non-blocking: the daemon stops reading once it drops us.
  size_t sent = 0;
  while (sent < many.size()) {
    ssize_t n = send(fd, many.data() + sent, many.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ExpectHonestServed();
  close(fd);
  ExpectHonestServed();
}


// Waits up to 5 s for `fd`'s file to be `size` bytes with at most `size`
// (plus a page) allocated: the daemon's sweep puts it back.
bool BackToSize(int fd, off_t size) {
  for (int i = 0; i < 250; ++i) {
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size == size && st.st_blocks * 512 <= size + 4096) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

constexpr off_t kExtent = 1 << 20;  // DaemonProcess runs with --extent-size 1048576

// A member grows an extent through its descriptor, past the size and with
// blocks past the end: the daemon trims it back (no memory past the
// quotas) and the channel keeps working.
TEST_F(HostileMemorySocketTest, AnExtentGrownThroughItsDescriptorIsTrimmedBack) {
  auto fd = honest_->FetchArenaFile("ch", shm::ArenaFile{0});
  ASSERT_TRUE(fd.ok()) << fd.status();
  // First it hides the extent: the header's published count is shared
  // memory it can write. The sweep does not go by it.
  auto header_fd = honest_->FetchArenaFile("ch", shm::ArenaFile{});
  ASSERT_TRUE(header_fd.ok());
  auto* header = static_cast<shm::ArenaHeader*>(
      mmap(nullptr, sizeof(shm::ArenaHeader), PROT_READ | PROT_WRITE, MAP_SHARED,
           header_fd->get(), 0));
  ASSERT_NE(header, MAP_FAILED);
  header->extent_count.store(0);
  ASSERT_EQ(ftruncate(fd->get(), 8 * kExtent), 0);
  ASSERT_EQ(fallocate(fd->get(), FALLOC_FL_KEEP_SIZE, 0, 16 * kExtent), 0);
  EXPECT_TRUE(BackToSize(fd->get(), kExtent)) << "the growth was never trimmed";
  header->extent_count.store(1);
  munmap(header, sizeof(shm::ArenaHeader));
  auto hfd = honest_->FetchArenaFile("ch", shm::ArenaFile{});
  ASSERT_TRUE(hfd.ok());
  ASSERT_EQ(fallocate(hfd->get(), FALLOC_FL_KEEP_SIZE, 0, 64 * kExtent), 0);
  EXPECT_TRUE(BackToSize(hfd->get(), 4096)) << "the header's growth was never trimmed";
  EXPECT_EQ(honest_->TouchChannel("ch"), grpc::StatusCode::OK);
}

// A member cuts an extent short: the daemon restores its size, so another
// member's mapping stops faulting (it reads zeros where data was cut), and
// the channel, only that one, answers DATA_LOSS until a restart repairs it.
TEST_F(HostileMemorySocketTest, AnExtentCutThroughItsDescriptorIsRestored) {
  ASSERT_TRUE(honest_->CreateChannel("bystander").ok());
  auto fd = honest_->FetchArenaFile("ch", shm::ArenaFile{0});
  ASSERT_TRUE(fd.ok()) << fd.status();
  auto* other_member = static_cast<volatile uint8_t*>(
      mmap(nullptr, kExtent, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0));
  ASSERT_NE(other_member, MAP_FAILED);
  ASSERT_EQ(ftruncate(fd->get(), kExtent / 2), 0);
  ASSERT_TRUE(BackToSize(fd->get(), kExtent)) << "the cut was never restored";
  EXPECT_EQ(other_member[kExtent - 1], 0);  // no SIGBUS: the page is back, zeroed
  munmap(const_cast<uint8_t*>(other_member), kExtent);
  EXPECT_EQ(honest_->TouchChannel("ch"), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(honest_->TouchChannel("bystander"), grpc::StatusCode::OK);
  // A restart repairs the channel.
  honest_.reset();
  daemon_.Kill9();
  daemon_.Start();
  honest_ = std::make_unique<GrpcClient>(daemon_.target());
  auto created = honest_->CreateChannel("probe");  // the daemon is back
  ASSERT_TRUE(created.ok()) << created.status();
  // The admin view: "ch" is no longer damaged.
  grpc::ClientContext ctx;
  v1::ListChannelsRequest list;
  v1::ListChannelsResponse channels;
  ASSERT_TRUE(honest_->admin().ListChannels(&ctx, list, &channels).ok());
  bool found = false;
  for (const auto& c : channels.channels()) {
    if (c.name() == "ch") {
      found = true;
      EXPECT_EQ(c.damage(), "");
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace structd::testing
