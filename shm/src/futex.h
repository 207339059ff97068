#ifndef STRUCTD_SHM_SRC_FUTEX_H_
#define STRUCTD_SHM_SRC_FUTEX_H_

// The futex system calls structd uses, in one place (internal to shm).
//
// Every call is on a *shared* futex (no FUTEX_PRIVATE_FLAG): the waiters
// and wakers are in different processes, which may map the word at
// different addresses. The kernel keys a shared futex by the mapped file
// and offset, so any mapping of the same arena bytes meets.
//
// Deadlines are absolute, on CLOCK_MONOTONIC (std::chrono::steady_clock in
// libstdc++), so a wait interrupted by a signal resumes with the same end.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace structd::shm::internal {

using FutexDeadline = std::chrono::steady_clock::time_point;
// No deadline: wait until woken.
inline constexpr FutexDeadline kNoDeadline = FutexDeadline::max();

// Sleeps while *word == expected, until woken or `deadline`. Returns 0 when
// woken (or spuriously), else an errno: EAGAIN (*word != expected when the
// kernel looked), ETIMEDOUT, EINTR.
int FutexWait(uint32_t* word, uint32_t expected, FutexDeadline deadline);

// Sleeps while *a == expected_a and *b == expected_b (futex_waitv, Linux
// 5.16+): a wake of either word ends it. Returns as FutexWait, or another
// errno if futex_waitv cannot be used: ENOSYS (an older kernel), EPERM (a
// seccomp filter), EINVAL.
int FutexWaitEither(uint32_t* a, uint32_t expected_a, uint32_t* b,
                    uint32_t expected_b, FutexDeadline deadline);

// One word of FutexWaitAny: sleep while *word == expected.
struct FutexWord {
  uint32_t* word;
  uint32_t expected;
};
// The most words one futex_waitv takes (the kernel's FUTEX_WAITV_MAX).
inline constexpr size_t kMaxFutexWords = 128;

// FutexWaitEither for 1 to kMaxFutexWords words: sleeps while every word
// holds its expected value; a wake of any ends it. Returns as
// FutexWaitEither (EINVAL for more words than the kernel takes).
int FutexWaitAny(std::span<const FutexWord> words, FutexDeadline deadline);

// What a waiter compares: the 4- or 8-byte word at `word`, loaded with
// acquire (so a waiter that sees a change sees what was stored before it).
template <typename Word>
Word LoadWordAcquire(const Word* word) {
  return std::atomic_ref<Word>(*const_cast<Word*>(word)).load(std::memory_order_acquire);
}

// Wakes up to `count` (> 0) waiters of `word`; returns how many it woke.
int FutexWake(uint32_t* word, int count);

}  // namespace structd::shm::internal

#endif  // STRUCTD_SHM_SRC_FUTEX_H_
