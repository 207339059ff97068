#include "structd/shm/port_ring.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <poll.h>

#include "gtest/gtest.h"
#include "structd/shm/field.h"
#include "structd/shm/field_watch.h"

namespace structd::shm {
namespace {

using namespace std::chrono_literals;

// Shared memory that survives fork: a ring, lanes, slots and whatever a
// test counts in it.
class SharedBytes {
 public:
  explicit SharedBytes(size_t bytes) : bytes_(bytes) {
    mem_ = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem_ == MAP_FAILED) std::abort();
  }
  ~SharedBytes() { munmap(mem_, bytes_); }
  template <typename T>
  T* at(size_t offset) {
    return reinterpret_cast<T*>(static_cast<char*>(mem_) + offset);
  }

 private:
  void* mem_;
  size_t bytes_;
};

// A ring at offset 0 and, after it, lanes and slots for `movers` movers.
struct TestPort {
  explicit TestPort(uint32_t capacity, uint32_t movers = 8)
      : ring_bytes((PortRing::BytesFor(capacity) + 63) / 64 * 64),
        mem(ring_bytes + movers * (sizeof(MoveLane) + 8) + (1 << 20)) {
    EXPECT_TRUE(PortRing::Format(mem.at<void>(0), ring_bytes, capacity).ok());
    ring.emplace(*PortRing::Attach(mem.at<void>(0), ring_bytes));
    lanes = mem.at<MoveLane>(ring_bytes);
    slots = mem.at<uint64_t>(ring_bytes + movers * sizeof(MoveLane));
    extra = mem.at<std::atomic<uint64_t>>(ring_bytes + movers * (sizeof(MoveLane) + 8));
  }
  MoveContext Mover(uint32_t i) {
    return MoveContext{&lanes[i], 100 + i, &slots[i], i, 0x5157};
  }
  absl::Status Send(uint32_t mover, uint64_t ref) {
    slots[mover] = ref;
    return ring->TrySend(Mover(mover));
  }
  // The next message, or 0 if none.
  uint64_t Receive(uint32_t mover) {
    slots[mover] = 0;
    if (!ring->TryReceive(Mover(mover)).ok()) return 0;
    uint64_t r = slots[mover];
    slots[mover] = 0;
    return r;
  }
  size_t ring_bytes;
  SharedBytes mem;
  std::optional<PortRing> ring;
  MoveLane* lanes;
  uint64_t* slots;
  std::atomic<uint64_t>* extra;  // room for a test's counters (1 MiB)
};

TEST(PortRingTest, FormatAndAttachRefuseCapacitiesThatAreNotPowersOfTwoOrDoNotFit) {
  SharedBytes mem(1 << 16);
  EXPECT_EQ(PortRing::Format(mem.at<void>(0), 1 << 16, 3).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PortRing::Format(mem.at<void>(0), 1 << 16, 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PortRing::Format(mem.at<void>(0), PortRing::BytesFor(64) - 1, 64).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(PortRing::Format(mem.at<void>(0), PortRing::BytesFor(64), 64).ok());
  EXPECT_EQ(PortRing::Attach(mem.at<void>(0), PortRing::BytesFor(64))->capacity(), 64u);
  // A member writes a capacity bigger than the block: the view refuses it.
  mem.at<PortRingHeader>(0)->capacity = 1 << 12;
  absl::StatusOr<PortRing> scribbled = PortRing::Attach(mem.at<void>(0), PortRing::BytesFor(64));
  EXPECT_EQ(scribbled.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(scribbled.status().message().find("overwrote"), std::string::npos);
}

TEST(PortRingTest, LayoutMatchesTheRing) {
  LayoutLimits builtin;
  builtin.max_fields = UINT32_MAX;
  builtin.ref_arrays = true;
  for (uint32_t capacity : {2u, 64u, 1024u}) {
    absl::StatusOr<Layout> layout = Layout::Compute(PortRing::LayoutFields(capacity), builtin);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->size(), PortRing::BytesFor(capacity));
    auto offset = [&](const char* name) { return layout->fields()[*layout->FindField(name)].offset; };
    EXPECT_EQ(offset("capacity"), offsetof(PortRingHeader, capacity));
    EXPECT_EQ(offset("tail"), offsetof(PortRingHeader, tail));
    EXPECT_EQ(offset("published"), offsetof(PortRingHeader, published));
    EXPECT_EQ(offset("receivers_waiting"), offsetof(PortRingHeader, receivers_waiting));
    EXPECT_EQ(offset("head"), offsetof(PortRingHeader, head));
    EXPECT_EQ(offset("freed"), offsetof(PortRingHeader, freed));
    EXPECT_EQ(offset("senders_waiting"), offsetof(PortRingHeader, senders_waiting));
    EXPECT_EQ(offset("seq"), sizeof(PortRingHeader));
    EXPECT_EQ(offset("ref"), sizeof(PortRingHeader) + 8 * capacity);
    ASSERT_EQ(layout->ref_offsets().size(), capacity) << "every message is a reference";
    EXPECT_EQ(layout->ref_offsets().back(), sizeof(PortRingHeader) + 16 * capacity - 8);
  }
  // A user's type may not hold an array of references.
  absl::StatusOr<Layout> user = Layout::Compute(PortRing::LayoutFields(4));
  EXPECT_EQ(user.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(user.status().message().find("built-in"), std::string::npos) << user.status();
}

TEST(PortRingTest, MessagesComeOutInOrderAndEachMoveEmptiesOneWordAndFillsTheOther) {
  TestPort port(4);
  for (uint64_t r : {11, 12, 13}) {
    ASSERT_TRUE(port.Send(0, r).ok());
    EXPECT_EQ(port.slots[0], 0u) << "a sent reference leaves the sender's slot";
  }
  EXPECT_EQ(port.ring->stats().depth(), 3u);
  EXPECT_EQ(port.Receive(1), 11u);
  EXPECT_EQ(port.Receive(1), 12u);
  EXPECT_EQ(port.Receive(1), 13u);
  EXPECT_EQ(port.Receive(1), 0u);
  EXPECT_EQ(port.lanes[0].op, 0u);
  EXPECT_EQ(port.lanes[1].op, 0u);
  EXPECT_EQ(port.ring->stats().head, 3u);
  EXPECT_EQ(port.ring->stats().tail, 3u);
}

TEST(PortRingTest, AFullPortRefusesASendAndLeavesTheSlotAlone) {
  TestPort port(4);
  for (uint64_t lap = 0; lap < 1000; ++lap) {
    for (uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(port.Send(0, lap * 10 + i).ok()) << lap;
    absl::Status full = port.Send(0, 99);
    EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(full.message().find("full"), std::string::npos);
    EXPECT_EQ(port.slots[0], 99u);
    for (uint64_t i = 1; i <= 4; ++i) ASSERT_EQ(port.Receive(1), lap * 10 + i) << lap;
    EXPECT_EQ(port.ring->TryReceive(port.Mover(1)).code(), absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(port.ring->stats().tail, 4000u);
}

TEST(PortRingTest, ABlockingReceiveTimesOutAndABlockingSendWaitsForRoom) {
  TestPort port(2);
  const auto start = std::chrono::steady_clock::now();
  absl::Status timed_out = port.ring->Receive(port.Mover(1), PortWait{30ms, 0});
  EXPECT_EQ(timed_out.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  ASSERT_TRUE(port.Send(0, 1).ok());
  ASSERT_TRUE(port.Send(0, 2).ok());
  std::thread receiver([&] {
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(port.Receive(1), 1u);
  });
  port.slots[0] = 3;
  const auto blocked = std::chrono::steady_clock::now();
  EXPECT_TRUE(port.ring->Send(port.Mover(0), PortWait{10s, 0}).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - blocked, 40ms) << "the send did not wait";
  receiver.join();
  EXPECT_EQ(port.Receive(1), 2u);
  EXPECT_EQ(port.Receive(1), 3u);
  port.slots[0] = 4;
  port.slots[2] = 5;
  ASSERT_TRUE(port.ring->TrySend(port.Mover(0)).ok());
  ASSERT_TRUE(port.ring->TrySend(port.Mover(2)).ok());
  port.slots[0] = 6;
  EXPECT_EQ(port.ring->Send(port.Mover(0), PortWait{20ms, 100}).code(),
            absl::StatusCode::kDeadlineExceeded);
}

// Runs `fn` in a child process; returns its pid.
template <typename Fn>
pid_t Spawn(Fn fn) {
  pid_t pid = fork();
  if (pid == 0) {
    fn();
    _exit(::testing::Test::HasFailure() ? 1 : 0);
  }
  return pid;
}

int ExitCode(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// N senders and M receivers in processes of their own, through a small
// port (so senders block on a full port and receivers on an empty one):
// every message comes out exactly once.
TEST(PortRingTest, EveryMessageOfManySendersIsReceivedExactlyOnceByManyReceivers) {
  constexpr uint32_t kSenders = 3, kReceivers = 2, kPerSender = 20000;
  constexpr uint64_t kTotal = uint64_t{kSenders} * kPerSender;
  TestPort port(8, kSenders + kReceivers);
  std::atomic<uint64_t>* received = &port.extra[0];
  std::atomic<uint64_t>* seen = &port.extra[1];  // kTotal counters
  // Senders that have stopped, for whatever reason: receivers stop once
  // all have and the port stays empty, so a failed sender fails the test
  // instead of hanging it.
  std::atomic<uint64_t>* senders_ended = &port.extra[kTotal + 1];
  std::vector<pid_t> pids;
  for (uint32_t s = 0; s < kSenders; ++s) {
    pids.push_back(Spawn([&, s] {
      for (uint64_t i = 0; i < kPerSender; ++i) {
        port.slots[s] = s * kPerSender + i + 1;
        absl::Status st = port.ring->Send(port.Mover(s), PortWait{10s, 50});
        if (!st.ok()) {
          ADD_FAILURE() << st;
          break;
        }
      }
      senders_ended->fetch_add(1);
    }));
  }
  for (uint32_t r = 0; r < kReceivers; ++r) {
    const uint32_t mover = kSenders + r;
    pids.push_back(Spawn([&, mover] {
      while (received->load() < kTotal) {
        const bool senders_done = senders_ended->load() == kSenders;
        port.slots[mover] = 0;
        absl::Status st = port.ring->Receive(port.Mover(mover), PortWait{20ms, 50});
        if (st.code() == absl::StatusCode::kDeadlineExceeded) {
          if (senders_done) break;  // nothing more will come
          continue;
        }
        if (!st.ok()) {
          ADD_FAILURE() << st;
          return;
        }
        const uint64_t value = port.slots[mover];
        if (value == 0 || value > kTotal) {
          ADD_FAILURE() << "received " << value;
          return;
        }
        seen[value - 1].fetch_add(1);
        received->fetch_add(1);
      }
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(ExitCode(pid), 0);
  uint64_t once = 0;
  for (uint64_t i = 0; i < kTotal; ++i) once += seen[i].load() == 1;
  EXPECT_EQ(once, kTotal) << "messages lost or received twice";
  EXPECT_EQ(received->load(), kTotal);
  EXPECT_EQ(port.ring->stats().depth(), 0u);
}

// Two processes hand one token back and forth through two ports with
// blocking receives: a lost wake-up leaves one side asleep until its
// timeout, and the test fails.
TEST(PortRingTest, NoWakeUpIsLostBetweenTwoProcessesHandingAMessageBackAndForth) {
  constexpr int kRounds = 20000;
  TestPort ping(2, 2), pong(2, 2);
  auto play = [&](TestPort& in, TestPort& out, uint32_t mover, bool first) {
    if (first) {
      out.slots[mover] = 1;
      if (!out.ring->TrySend(out.Mover(mover)).ok()) return false;
    }
    for (int i = 0; i < kRounds; ++i) {
      in.slots[mover] = 0;
      absl::Status st = in.ring->Receive(in.Mover(mover), PortWait{5s, 0});
      if (!st.ok()) {
        ADD_FAILURE() << "round " << i << ": " << st;
        return false;
      }
      out.slots[mover] = in.slots[mover];
      in.slots[mover] = 0;
      if (!out.ring->Send(out.Mover(mover), PortWait{5s, 0}).ok()) return false;
    }
    return true;
  };
  pid_t child = Spawn([&] { EXPECT_TRUE(play(ping, pong, 1, false)); });
  EXPECT_TRUE(play(pong, ping, 0, true));
  EXPECT_EQ(ExitCode(child), 0);
}

// The event-loop hook: a FieldWatch of the ring's publish counter makes a
// descriptor readable when a message arrives, with no thread per port.
TEST(PortRingTest, AWatchOfThePublishCounterMakesADescriptorReadableWhenAMessageArrives) {
  TestPort port(4);
  absl::StatusOr<std::unique_ptr<FieldWatch>> watch = FieldWatch::Create();
  ASSERT_TRUE(watch.ok()) << watch.status();
  Scalar<uint32_t> published(port.ring->published_word());
  port.ring->AddPublishWatcher();
  ASSERT_TRUE((*watch)->Watch(published, published.load()).ok());
  pollfd pfd{(*watch)->fd(), POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 50), 0) << "readable before any message";
  std::thread sender([&] {
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(port.Send(0, 77).ok());
  });
  EXPECT_EQ(poll(&pfd, 1, 5000), 1) << "the message did not make the descriptor readable";
  sender.join();
  EXPECT_EQ((*watch)->TakeFired().size(), 1u);
  EXPECT_EQ(port.Receive(1), 77u);
  port.ring->RemovePublishWatcher();
  EXPECT_EQ(port.ring->stats().receivers_waiting, 0u);
}

// The daemon's moves: it has no slot in shared memory (its own record of
// the reference is a session's ledger). A send of its that died before
// the reference reached the cell is completed as a hole, which receivers
// skip; a receive of its that died between taking and emptying is put
// back.
TEST(PortRingTest, ASendRepairedWithoutItsReferenceLeavesAHoleThatReceiversSkip) {
  TestPort port(4);
  internal::StopPortMoveAfterStepForTesting(2);  // claimed, nothing written
  EXPECT_EQ(port.Send(0, 42).code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(port.Send(1, 43).ok());
  EXPECT_EQ(port.ring->RepairLane(port.Mover(0).lane_id, nullptr),
            PortRing::Repair::kSendCompleted);
  EXPECT_EQ(port.Receive(2), 43u) << "the hole is skipped";
  EXPECT_EQ(port.Receive(2), 0u);
  EXPECT_EQ(port.ring->stats().depth(), 0u);
}

TEST(PortRingTest, ATwoStepReceiveIsPutBackIfTheReceiverDiesBetweenTheSteps) {
  TestPort port(4);
  ASSERT_TRUE(port.Send(1, 42).ok());
  absl::StatusOr<PortRing::Taken> taken = port.ring->BeginReceive(port.Mover(0));
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->ref, 42u);
  EXPECT_EQ(port.ring->TryReceive(port.Mover(2)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(port.ring->RepairLane(port.Mover(0).lane_id, nullptr),
            PortRing::Repair::kReceiveRolledBack);
  taken = port.ring->BeginReceive(port.Mover(0));
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->ref, 42u);
  port.ring->FinishReceive(port.Mover(0), *taken);
  EXPECT_EQ(port.lanes[0].op, 0u);
  EXPECT_EQ(port.ring->BeginReceive(port.Mover(0)).status().code(), absl::StatusCode::kNotFound);
}

// A receiver stopped after emptying its cell and before moving `head` (a
// thread preempted there: the many-senders test failed so under ASan)
// lets senders fill that cell again for the next lap, since a sender
// claims a free cell without looking at `head`. Other receivers must help
// `head` past it, and a sender whose `tail` is a lap stale must help
// `tail` on, not call the ring damaged (both did: DATA_LOSS).
TEST(PortRingTest, ACellFilledForTheNextLapBeforeHeadMovedIsHelpedPastNotCalledDamage) {
  TestPort port(4);
  ASSERT_TRUE(port.Send(1, 10).ok());  // position 0
  port.slots[0] = 0;
  internal::StopPortMoveAfterStepForTesting(5);  // cell 0 emptied, `head` still 0
  EXPECT_EQ(port.ring->TryReceive(port.Mover(0)).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(port.slots[0], 10u);
  // Positions 1 to 4: the last fills cell 0 again, with `head` at 0.
  for (uint64_t v = 11; v <= 14; ++v) ASSERT_TRUE(port.Send(1, v).ok()) << v;
  auto* header = reinterpret_cast<PortRingHeader*>(port.mem.at<void>(0));
  ASSERT_EQ(header->head, 0u);
  // A sender that read `tail` before the ring went round finds the port
  // full. (Its stale view is modelled by writing the old `tail` back for
  // the length of the call; the word is put right afterwards, since a real
  // `tail` never goes back.)
  const uint64_t tail = header->tail;
  ASSERT_EQ(tail, 5u);
  header->tail = 0;
  EXPECT_EQ(port.Send(3, 15).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GE(header->tail, 1u) << "helped on";
  EXPECT_LE(header->tail, tail) << "never past what was sent";
  header->tail = tail;
  for (uint64_t v = 11; v <= 14; ++v) EXPECT_EQ(port.Receive(2), v);
  EXPECT_EQ(port.Receive(2), 0u);
  for (uint64_t v = 1; v <= 9; ++v) {
    ASSERT_TRUE(port.Send(3, v).ok()) << v;
    ASSERT_EQ(port.Receive(2), v);
  }
}

// What a kill at each step of a send leaves, and what RepairLane makes of
// it: the message ends up in the port or in the slot, exactly once, and
// the port goes on working.
class PortSendCrashTest : public ::testing::TestWithParam<int> {};

TEST_P(PortSendCrashTest, TheRepairCompletesTheSendOrFindsItNeverHappened) {
  const int step = GetParam();
  TestPort port(4);
  ASSERT_TRUE(port.Send(1, 7).ok());  // an earlier message, not involved
  internal::StopPortMoveAfterStepForTesting(step);
  EXPECT_EQ(port.Send(0, 42).code(), absl::StatusCode::kAborted);
  EXPECT_NE(port.lanes[0].op, 0u) << "the killed move left its lane set";
  const PortRing::Repair repair =
      port.ring->RepairLane(port.Mover(0).lane_id, &port.slots[0]);
  port.lanes[0].op = 0;
  if (step == 1) {
    EXPECT_EQ(repair, PortRing::Repair::kNothing);
    EXPECT_EQ(port.slots[0], 42u) << "never sent: still the sender's";
    EXPECT_EQ(port.Receive(2), 7u);
    EXPECT_EQ(port.Receive(2), 0u);
  } else {
    EXPECT_EQ(repair, step == 6 ? PortRing::Repair::kNothing : PortRing::Repair::kSendCompleted);
    EXPECT_EQ(port.slots[0], 0u) << "sent: no longer the sender's";
    EXPECT_EQ(port.Receive(2), 7u);
    EXPECT_EQ(port.Receive(2), 42u);
    EXPECT_EQ(port.Receive(2), 0u);
  }
  // The port works on, over more than a lap.
  for (uint64_t i = 1; i <= 9; ++i) {
    ASSERT_TRUE(port.Send(3, i).ok()) << i;
    ASSERT_EQ(port.Receive(2), i);
  }
}

INSTANTIATE_TEST_SUITE_P(Steps, PortSendCrashTest, ::testing::Range(1, 7));

class PortReceiveCrashTest : public ::testing::TestWithParam<int> {};

TEST_P(PortReceiveCrashTest, TheRepairRollsTheReceiveBackUnlessTheSlotHasTheMessage) {
  const int step = GetParam();
  TestPort port(4);
  ASSERT_TRUE(port.Send(1, 42).ok());
  ASSERT_TRUE(port.Send(1, 43).ok());
  port.slots[0] = 0;
  internal::StopPortMoveAfterStepForTesting(step);
  EXPECT_EQ(port.ring->TryReceive(port.Mover(0)).code(), absl::StatusCode::kAborted);
  // Meanwhile another receiver finds the next message busy, not lost.
  if (step >= 2 && step <= 4) {
    EXPECT_EQ(port.ring->TryReceive(port.Mover(2)).code(), absl::StatusCode::kNotFound);
  }
  const PortRing::Repair repair =
      port.ring->RepairLane(port.Mover(0).lane_id, &port.slots[0]);
  if (step <= 2) {
    EXPECT_EQ(repair, step == 1 ? PortRing::Repair::kNothing
                                : PortRing::Repair::kReceiveRolledBack);
    EXPECT_EQ(port.slots[0], 0u);
    EXPECT_EQ(port.Receive(2), 42u) << "not received: still in the port, first";
  } else {
    EXPECT_EQ(repair, step == 5 ? PortRing::Repair::kNothing
                                : PortRing::Repair::kReceiveCompleted);
    EXPECT_EQ(port.slots[0], 42u) << "received: the dead receiver's";
  }
  EXPECT_EQ(port.Receive(2), 43u);
  EXPECT_EQ(port.Receive(2), 0u);
  for (uint64_t i = 1; i <= 9; ++i) {
    ASSERT_TRUE(port.Send(3, i).ok()) << i;
    ASSERT_EQ(port.Receive(2), i);
  }
}

INSTANTIATE_TEST_SUITE_P(Steps, PortReceiveCrashTest, ::testing::Range(1, 6));

// A receiver process killed at random moments while it takes messages:
// after the repair, every message is in the port, in the dead receiver's
// slot, or was consumed, exactly once.
TEST(PortRingTest, AReceiverKilledAnywhereLeavesEveryMessageInExactlyOnePlace) {
  constexpr uint64_t kMessages = 1 << 15;
  std::mt19937_64 rng(20261202);
  int killed_mid_stream = 0;
  for (int round = 0; round < 20; ++round) {
    TestPort port(1 << 16, 4);
    std::atomic<uint64_t>* consumed = &port.extra[0];  // per message
    for (uint64_t i = 1; i <= kMessages; ++i) ASSERT_TRUE(port.Send(1, i).ok());
    pid_t child = Spawn([&] {
      for (;;) {
        port.slots[0] = 0;
        if (!port.ring->TryReceive(port.Mover(0)).ok()) continue;
        // Consume: mark, then give the slot up (a kill between the two
        // leaves both, which the count below allows for).
        consumed[port.slots[0] - 1].store(1);
        // About a microsecond of work per message, so that the kill
        // lands while messages remain.
        for (int spin = 0; spin < 300; ++spin) asm volatile("" ::: "memory");
      }
    });
    // Once it is taking messages (on a loaded machine the child may not
    // run for a while), a random moment later.
    for (int wait = 0; wait < 10000 && port.ring->stats().depth() == kMessages; ++wait) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 5000));
    kill(child, SIGKILL);
    EXPECT_EQ(ExitCode(child), 128 + SIGKILL);
    port.ring->RepairLane(port.Mover(0).lane_id, &port.slots[0]);
    std::vector<int> places(kMessages + 1, 0);
    for (uint64_t i = 0; i < kMessages; ++i) places[i + 1] += consumed[i].load();
    const uint64_t in_slot = port.slots[0];
    if (in_slot != 0 && consumed[in_slot - 1].load() == 0) ++places[in_slot];
    uint64_t left = 0;
    for (uint64_t r = port.Receive(2); r != 0; r = port.Receive(2), ++left) ++places[r];
    if (left > 0 && left < kMessages) ++killed_mid_stream;
    for (uint64_t i = 1; i <= kMessages; ++i) {
      ASSERT_EQ(places[i], 1) << "round " << round << ", message " << i;
    }
  }
  EXPECT_GT(killed_mid_stream, 0) << "no kill landed while messages were being taken";
}

// A sender process killed at random moments: after the repair every
// message it made is in the port or still in its slot, exactly once, in
// the order it was sent.
TEST(PortRingTest, ASenderKilledAnywhereLeavesEveryMessageInExactlyOnePlace) {
  constexpr uint64_t kMessages = 1 << 15;
  std::mt19937_64 rng(20261203);
  int killed_mid_stream = 0;
  for (int round = 0; round < 20; ++round) {
    TestPort port(1 << 16, 4);
    std::atomic<uint64_t>& next = port.extra[0];  // the message being sent
    next.store(1);
    pid_t child = Spawn([&] {
      for (uint64_t i = next.load(); i <= kMessages; i = next.load()) {
        port.slots[0] = i;
        if (port.ring->TrySend(port.Mover(0)).ok()) next.store(i + 1);
        for (int spin = 0; spin < 2000; ++spin) asm volatile("" ::: "memory");
      }
      while (true) pause();  // all sent: wait for the kill
    });
    // Once it is sending (on a loaded machine the child may not run for a
    // while), a random moment later.
    for (int wait = 0; wait < 10000 && next.load() == 1; ++wait) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 5000));
    kill(child, SIGKILL);
    EXPECT_EQ(ExitCode(child), 128 + SIGKILL);
    port.ring->RepairLane(port.Mover(0).lane_id, &port.slots[0]);
    const uint64_t last = std::min(next.load(), kMessages);
    std::vector<int> places(kMessages + 2, 0);
    if (port.slots[0] != 0) ++places[port.slots[0]];
    uint64_t previous = 0, in_port = 0;
    for (uint64_t r = port.Receive(2); r != 0; r = port.Receive(2), ++in_port) {
      ASSERT_LE(r, last) << "round " << round << ": a message that was never made";
      ASSERT_GT(r, previous) << "round " << round << ": out of order";
      previous = r;
      ++places[r];
    }
    if (in_port > 0 && in_port + 1 < kMessages) ++killed_mid_stream;
    for (uint64_t i = 1; i < last; ++i) {
      ASSERT_EQ(places[i], 1) << "round " << round << ", message " << i;
    }
    EXPECT_LE(places[last], 1) << "round " << round;
  }
  EXPECT_GT(killed_mid_stream, 0) << "no kill landed while messages were being sent";
}

// Random bytes in a port's memory: every call returns (an error is fine)
// and none reads or writes outside the ring (the sanitizer builds check
// that), and a repair terminates.
TEST(PortRingTest, ScribbledPortMemoryMakesCallsFailNeverHangOrStrayOutside) {
  std::mt19937_64 rng(4242);
  for (int round = 0; round < 60; ++round) {
    TestPort port(16, 4);
    for (uint64_t i = 1; i <= 5; ++i) ASSERT_TRUE(port.Send(1, i).ok());
    auto* bytes = port.mem.at<uint8_t>(0);
    const size_t ring_bytes = PortRing::BytesFor(16);
    for (int n = 0; n < 1 + round % 40; ++n) {
      bytes[64 + rng() % (ring_bytes - 64)] = static_cast<uint8_t>(rng());  // capacity kept
    }
    if (round % 3 == 0) {  // a cursor near the end of positions
      port.mem.at<PortRingHeader>(0)->tail = kMaxPortPosition - rng() % 3;
    }
    for (int op = 0; op < 20; ++op) {
      port.slots[0] = op + 1;
      (void)port.ring->Send(port.Mover(0), PortWait{1ms, 10});
      port.slots[2] = 0;
      (void)port.ring->Receive(port.Mover(2), PortWait{1ms, 10});
    }
    (void)port.ring->RepairLane(port.Mover(0).lane_id, &port.slots[0]);
    (void)port.ring->HelpCursors();
    (void)port.ring->stats();
    uint64_t messages = 0;
    port.ring->ForEachMessage([&](uint64_t) { ++messages; });
    EXPECT_LE(messages, 16u);
  }
}

}  // namespace
}  // namespace structd::shm
