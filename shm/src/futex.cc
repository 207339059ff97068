#include "futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>

// futex_waitv (Linux 5.16) has the same number on every architecture;
// kernel headers older than the kernel may lack it and its struct.
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
struct futex_waitv {
  uint64_t val;
  uint64_t uaddr;
  uint32_t flags;
  uint32_t __reserved;
};
#endif

namespace structd::shm::internal {
namespace {

timespec ToTimespec(FutexDeadline deadline) {
  auto since = deadline.time_since_epoch();
  if (since.count() < 0) since = since.zero();
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(since).count();
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

int ErrnoOf(long rc) { return rc < 0 ? errno : 0; }

}  // namespace

int FutexWait(uint32_t* word, uint32_t expected, FutexDeadline deadline) {
  timespec ts;
  const timespec* timeout = nullptr;
  if (deadline != kNoDeadline) {
    ts = ToTimespec(deadline);
    timeout = &ts;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout (FUTEX_WAIT
  // a relative one); FUTEX_BITSET_MATCH_ANY makes it a plain wait.
  return ErrnoOf(syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, timeout,
                         nullptr, FUTEX_BITSET_MATCH_ANY));
}

int FutexWaitEither(uint32_t* a, uint32_t expected_a, uint32_t* b,
                    uint32_t expected_b, FutexDeadline deadline) {
  const FutexWord words[2] = {{a, expected_a}, {b, expected_b}};
  return FutexWaitAny(words, deadline);
}

int FutexWaitAny(std::span<const FutexWord> words, FutexDeadline deadline) {
  if (words.empty() || words.size() > kMaxFutexWords) return EINVAL;
  futex_waitv waiters[kMaxFutexWords] = {};
  for (size_t i = 0; i < words.size(); ++i) {
    waiters[i].val = words[i].expected;
    waiters[i].uaddr = reinterpret_cast<uintptr_t>(words[i].word);
    waiters[i].flags = FUTEX_32;  // shared: no FUTEX_PRIVATE_FLAG
  }
  timespec ts;
  const timespec* timeout = nullptr;
  if (deadline != kNoDeadline) {
    ts = ToTimespec(deadline);
    timeout = &ts;
  }
  long rc = syscall(SYS_futex_waitv, waiters, static_cast<unsigned>(words.size()), 0, timeout,
                    CLOCK_MONOTONIC);
  // On success it returns the index of the word that was woken.
  return rc >= 0 ? 0 : errno;
}

int FutexWake(uint32_t* word, int count) {
  if (count <= 0) return 0;
  long woke = syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
  return woke < 0 ? 0 : static_cast<int>(woke);
}

}  // namespace structd::shm::internal
