#include "structd/shm/field_wait.h"

#include <atomic>
#include <bit>
#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "futex.h"

namespace structd::shm {
namespace {

using internal::FutexDeadline;
using internal::kNoDeadline;

// Kernels before 5.16 have no futex_waitv. An 8-byte wait there sleeps on
// the low half only and looks again every kFallbackSlice: a store that
// changes only the high half just before the waiter sleeps is then seen
// one slice late, never missed.
constexpr std::chrono::milliseconds kFallbackSlice{1};
std::atomic<bool> g_no_waitv{false};

FutexDeadline DeadlineAfter(std::chrono::nanoseconds timeout) {
  const FutexDeadline now = std::chrono::steady_clock::now();
  if (timeout >= FutexDeadline::max() - now) return kNoDeadline;
  return now + timeout;
}

absl::Status StillUnchanged(std::chrono::nanoseconds timeout) {
  return absl::DeadlineExceededError(absl::StrFormat(
      "field wait: the field still holds the value the caller saw after "
      "%d ms (a writer must call Notify after its store to wake waiters)",
      std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
}

static_assert(std::endian::native == std::endian::little,
              "an 8-byte field's low half is its first 4 bytes only on little-endian hosts");

// One sleep of an 8-byte wait; `halves` is the field as two 4-byte words,
// low half first (the arena is little-endian).
void SleepOnEightBytes(uint32_t* halves, uint64_t seen, FutexDeadline deadline) {
  const auto low = static_cast<uint32_t>(seen);
  const auto high = static_cast<uint32_t>(seen >> 32);
  if (!g_no_waitv.load(std::memory_order_relaxed)) {
    switch (internal::FutexWaitEither(&halves[0], low, &halves[1], high, deadline)) {
      case 0:          // woken
      case EAGAIN:     // a half changed before we slept
      case EINTR:
      case ETIMEDOUT:
        return;
      default:
        // ENOSYS (a kernel before 5.16), EPERM (a seccomp filter that
        // does not know futex_waitv), anything else: never again, or
        // the caller's loop would spin on the failing call.
        g_no_waitv.store(true, std::memory_order_relaxed);
    }
  }
  const FutexDeadline slice = DeadlineAfter(kFallbackSlice);
  internal::FutexWait(&halves[0], low, slice < deadline ? slice : deadline);
}

}  // namespace

absl::StatusOr<uint32_t> WaitWhileEquals(const uint32_t* word, uint32_t seen,
                                         std::chrono::nanoseconds timeout) {
  const FutexDeadline deadline = DeadlineAfter(timeout);
  for (;;) {
    const uint32_t now = internal::LoadWordAcquire(word);
    if (now != seen) return now;
    if (deadline != kNoDeadline && std::chrono::steady_clock::now() >= deadline) {
      return StillUnchanged(timeout);
    }
    // EAGAIN (changed before we slept), EINTR, ETIMEDOUT and a wake all
    // come back here to look at the value again.
    internal::FutexWait(const_cast<uint32_t*>(word), seen, deadline);
  }
}

absl::StatusOr<uint64_t> WaitWhileEquals(const uint64_t* word, uint64_t seen,
                                         std::chrono::nanoseconds timeout) {
  const FutexDeadline deadline = DeadlineAfter(timeout);
  auto* halves = reinterpret_cast<uint32_t*>(const_cast<uint64_t*>(word));
  for (;;) {
    const uint64_t now = internal::LoadWordAcquire(word);
    if (now != seen) return now;
    if (deadline != kNoDeadline && std::chrono::steady_clock::now() >= deadline) {
      return StillUnchanged(timeout);
    }
    SleepOnEightBytes(halves, seen, deadline);
  }
}

int NotifyFieldWaiters(const void* field, int count) {
  // Both sizes wait on the field's first 4 bytes (an 8-byte waiter on its
  // second 4 as well): a wake there reaches every waiter of this field and
  // no other.
  return internal::FutexWake(static_cast<uint32_t*>(const_cast<void*>(field)),
                             count);
}

namespace internal {
void ForceEightByteWaitFallbackForTesting(bool on) {
  g_no_waitv.store(on, std::memory_order_relaxed);
}
}  // namespace internal

}  // namespace structd::shm
