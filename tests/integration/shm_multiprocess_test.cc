// The shm library across real fork()ed processes: each child opens the
// arena by path, as an unrelated process would, and resolves 64-bit refs.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/shm/field.h"
#include "structd/shm/sync.h"
#include "testing/child_process.h"
#include "testing/shm_fixture.h"

namespace structd::shm {
namespace {

using namespace std::chrono_literals;
using structd::testing::ChildProcess;
using structd::testing::OwnedArena;
using structd::testing::SharedBlock;

// The state letter of /proc/PID/stat (R, S, D, Z, ...), or '?'.
char ProcessState(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return '?';
  char buf[512] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string stat(buf, n);
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size()
             ? stat[paren + 2]
             : '?';
}

Layout CounterLayout() {
  return *Layout::Compute({FieldSpec::Scalar("hits", FieldKind::kU64),
                           FieldSpec::Scalar("misses", FieldKind::kI32)});
}

TEST(ShmMultiProcessTest, ConcurrentFetchAddTotalIsExact) {
  OwnedArena owned;
  Layout layout = CounterLayout();
  Ref ref = *owned.alloc->Allocate(1, layout);
  FieldHandle hits = *FieldHandle::BindScalar<uint64_t>(layout, "hits");
  constexpr int kProcs = 8;
  constexpr int kAdds = 200000;
  std::vector<ChildProcess> children;
  for (int p = 0; p < kProcs; ++p) {
    children.emplace_back([&] {
      auto arena = owned.OpenAgain();
      if (!arena) return 2;
      auto inst = arena->Resolve(ref);
      if (!inst.ok()) return 3;
      Scalar<uint64_t> h = hits.scalar<uint64_t>(*inst);
      for (int i = 0; i < kAdds; ++i) h.fetch_add(1);
      return 0;
    });
  }
  for (auto& c : children) EXPECT_EQ(c.Wait(), 0);
  auto inst = owned.arena->Resolve(ref);
  ASSERT_TRUE(inst.ok());
  EXPECT_EQ(hits.scalar<uint64_t>(*inst).load(std::memory_order_seq_cst),
            uint64_t{kProcs} * kAdds);
}

// Invariant 5: a reader that follows the published extent count never
// touches unbacked memory and never sees an extent before it is complete.
TEST(ShmMultiProcessTest, ReaderOfTheNewestExtentNeverFaultsWhileArenaGrows) {
  OwnedArena owned(/*extent_size=*/128 * 1024, /*max_extents=*/300);
  constexpr uint32_t kGrowths = 250;
  const uint64_t last_word = 128 * 1024 - 8;
  SharedBlock<std::atomic<int>> done;
  done[0] = 0;
  ChildProcess reader([&]() -> int {
    auto arena = owned.OpenAgain(Access::kReadOnly);
    if (!arena) return 2;
    uint64_t reads = 0;
    for (;;) {
      bool finished = done[0].load() != 0;
      uint32_t n = arena->extent_count();
      uint32_t id = n - 1;
      auto base = arena->ExtentBase(id);
      if (!base.ok()) return 3;
      auto* eh = reinterpret_cast<const ExtentHeader*>(*base);
      if (eh->magic != kExtentMagic || eh->extent_id != id) return 4;
      uint64_t w = std::atomic_ref<uint64_t>(
                       *reinterpret_cast<uint64_t*>(*base + last_word))
                       .load(std::memory_order_acquire);
      if (w != 0 && w != 0xC0FFEE0000000000ull + id) return 5;
      ++reads;
      if (finished) break;
    }
    return reads > 0 ? 0 : 6;
  });
  for (uint32_t g = 0; g < kGrowths; ++g) {
    auto id = owned.arena->Grow();
    ASSERT_TRUE(id.ok()) << id.status();
    auto base = owned.arena->ExtentBase(*id);
    ASSERT_TRUE(base.ok());
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(*base + last_word))
        .store(0xC0FFEE0000000000ull + *id, std::memory_order_release);
  }
  done[0] = 1;
  EXPECT_EQ(reader.Wait(), 0);
  EXPECT_EQ(owned.arena->extent_count(), kGrowths + 1);
}

TEST(ShmMultiProcessTest, ConcurrentGrowersEachGetADistinctExtent) {
  OwnedArena owned(/*extent_size=*/128 * 1024, /*max_extents=*/200);
  constexpr int kProcs = 6;
  constexpr int kEach = 25;
  SharedBlock<uint32_t> ids(kProcs * kEach);
  std::vector<ChildProcess> children;
  for (int p = 0; p < kProcs; ++p) {
    children.emplace_back([&, p] {
      auto arena = owned.OpenAgain();
      if (!arena) return 2;
      for (int i = 0; i < kEach; ++i) {
        auto id = arena->Grow();
        if (!id.ok()) return 3;
        ids[p * kEach + i] = *id;
      }
      return 0;
    });
  }
  for (auto& c : children) ASSERT_EQ(c.Wait(), 0);
  std::set<uint32_t> seen(ids.get(), ids.get() + kProcs * kEach);
  EXPECT_EQ(seen.size(), size_t{kProcs * kEach});
  EXPECT_EQ(*seen.begin(), 1u);  // extent 0 came with Create
  EXPECT_EQ(*seen.rbegin(), uint32_t{kProcs * kEach});
  EXPECT_EQ(owned.arena->extent_count(), uint32_t{kProcs * kEach + 1});
  for (uint32_t id : seen) {
    auto base = owned.arena->ExtentBase(id);
    ASSERT_TRUE(base.ok()) << base.status();
    EXPECT_EQ(reinterpret_cast<const ExtentHeader*>(*base)->extent_id, id);
  }
}

// Writers write strings whose every byte is the same letter and whose length
// is a function of the letter; a torn read would mix letters or lengths.
std::string Pattern(uint32_t i) {
  char c = static_cast<char>('a' + i % 26);
  return std::string(7 + (i * 13) % 90, c);
}
bool IsPattern(const std::string& s) {
  if (s.empty()) return true;  // never written yet
  uint32_t letter = static_cast<uint32_t>(s[0] - 'a');
  for (char ch : s) {
    if (ch != s[0]) return false;
  }
  for (uint32_t i = letter; i < 26 * 90; i += 26) {
    if (Pattern(i).size() == s.size()) return true;
  }
  return false;
}

TEST(ShmMultiProcessTest, ReadersNeverSeeATornStringWhileWritersRewriteIt) {
  OwnedArena owned;
  Layout layout = *Layout::Compute({FieldSpec::String("s", 100)});
  Ref ref = *owned.alloc->Allocate(1, layout);
  FieldHandle s = *FieldHandle::Bind(layout, "s", FieldKind::kString);
  SharedBlock<std::atomic<int>> stop;
  stop[0] = 0;
  std::vector<ChildProcess> writers, readers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      auto arena = owned.OpenAgain();
      auto inst = arena->Resolve(ref);
      if (!inst.ok()) return 2;
      BytesField f = s.bytes(*inst);
      for (uint32_t i = w; stop[0].load() == 0; i += 2) {
        if (!f.Write(Pattern(i)).ok()) return 3;
      }
      return 0;
    });
  }
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      auto arena = owned.OpenAgain(Access::kReadOnly);
      auto inst = arena->Resolve(ref);
      if (!inst.ok()) return 2;
      BytesField f = s.bytes(*inst);
      std::string v;
      for (int i = 0; i < 300000; ++i) {
        if (!f.Read(v).ok()) return 3;
        if (!IsPattern(v)) return 4;
      }
      return 0;
    });
  }
  for (auto& r : readers) EXPECT_EQ(r.Wait(), 0);
  stop[0] = 1;
  for (auto& w : writers) EXPECT_EQ(w.Wait(), 0);
}

TEST(ShmMultiProcessTest, RefSurvivesARoundTripThroughAnotherProcess) {
  OwnedArena owned;
  Layout layout = CounterLayout();
  Ref ref = *owned.alloc->Allocate(1, layout);
  FieldHandle misses = *FieldHandle::BindScalar<int32_t>(layout, "misses");
  int to_child[2], from_child[2];
  ASSERT_EQ(pipe(to_child), 0);
  ASSERT_EQ(pipe(from_child), 0);
  ChildProcess child([&]() -> int {
    uint64_t bits = 0;
    if (read(to_child[0], &bits, sizeof bits) != sizeof bits) return 2;
    auto arena = owned.OpenAgain();
    auto inst = arena->Resolve(Ref::FromBits(bits));
    if (!inst.ok()) return 3;
    misses.scalar<int32_t>(*inst).store(-42);
    // Send the ref back as text, to show that form round-trips too.
    std::string text = Ref::FromBits(bits).ToString();
    text.resize(32);
    if (write(from_child[1], text.data(), 32) != 32) return 4;
    return 0;
  });
  uint64_t bits = ref.bits();
  ASSERT_EQ(write(to_child[1], &bits, sizeof bits), ssize_t{sizeof bits});
  char back[32];
  ASSERT_EQ(read(from_child[0], back, 32), 32);
  EXPECT_EQ(child.Wait(), 0);
  auto parsed = Ref::Parse(std::string(back, strnlen(back, 32)));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(*parsed, ref);
  auto inst = owned.arena->Resolve(*parsed);
  ASSERT_TRUE(inst.ok());
  EXPECT_EQ(misses.scalar<int32_t>(*inst).load(), -42);
  for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) {
    close(fd);
  }
}

TEST(ShmMultiProcessTest, ConditionWakesAWaiterInAnotherProcess) {
  OwnedArena owned;
  Layout layout = *Layout::Compute({FieldSpec::Mutex("mu"),
                                    FieldSpec::Condition("cv"),
                                    FieldSpec::Scalar("ready", FieldKind::kU32)});
  Ref ref = *owned.alloc->Allocate(1, layout);
  InstancePtr inst = *owned.arena->Resolve(ref);
  FieldHandle mu = *FieldHandle::Bind(layout, "mu", FieldKind::kMutex);
  FieldHandle cv = *FieldHandle::Bind(layout, "cv", FieldKind::kCondition);
  FieldHandle ready = *FieldHandle::BindScalar<uint32_t>(layout, "ready");
  ChildProcess waiter([&]() -> int {
    auto arena = owned.OpenAgain();
    auto i = arena->Resolve(ref);
    if (!i.ok()) return 2;
    MutexField m(mu.address(*i));
    ConditionField c(cv.address(*i));
    auto g = m.Lock();
    if (!g.ok()) return 3;
    auto r = c.WaitFor(*g, 20s, [&] {
      return ready.scalar<uint32_t>(*i).load() == 1;
    });
    return r.ok() && *r ? 0 : 4;
  });
  // Wait until the child sleeps in the kernel: it registered as a waiter
  // and its state is S (its only blocking call then is the futex wait).
  auto* waiters = reinterpret_cast<std::atomic<uint32_t>*>(
      static_cast<uint8_t*>(cv.address(inst)) + 4);
  for (int i = 0; i < 20000 && !(waiters->load() == 1 &&
                                 ProcessState(waiter.pid()) == 'S');
       ++i) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(waiters->load(), 1u);
  {
    auto g = MutexField(mu.address(inst)).Lock();
    ASSERT_TRUE(g.ok());
    ready.scalar<uint32_t>(inst).store(1);
  }
  EXPECT_EQ(ConditionField(cv.address(inst)).Notify(1), 1);
  EXPECT_EQ(waiter.Wait(), 0);
}

}  // namespace
}  // namespace structd::shm
