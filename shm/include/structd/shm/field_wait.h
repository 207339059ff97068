#ifndef STRUCTD_SHM_FIELD_WAIT_H_
#define STRUCTD_SHM_FIELD_WAIT_H_

// Waiting for a 4- or 8-byte scalar field to change, and waking the
// waiters: structd's Atomics.wait / Atomics.notify. The waiter sleeps in
// the kernel (a shared futex on the field's own bytes), so waiters and
// notifiers may be in any processes that map the arena, at any addresses.
// The daemon takes no part. The protocol, for clients in other languages,
// is in doc/arena-format.md ("Waiting for a field to change").
//
// Scalar<T>::WaitChanged and Scalar<T>::Notify (field.h) are the API;
// these are the untyped functions under them.

#include <chrono>
#include <climits>
#include <cstdint>

#include "absl/status/statusor.h"

namespace structd::shm {

// A timeout that never ends.
inline constexpr std::chrono::nanoseconds kWaitForever =
    std::chrono::nanoseconds::max();
// Notify's count meaning "every waiter".
inline constexpr int kNotifyAll = INT_MAX;

// Blocks while `*word == seen` (loaded with acquire), until a notify finds
// it changed, and returns the value it then holds. DeadlineExceeded if it
// still holds `seen` after `timeout` (a timeout <= 0 checks once). A wake
// that finds the value unchanged (a notify without a store, or a store
// back to `seen`) goes back to sleep.
// REQUIRES: `word` is naturally aligned and stays mapped during the call.
absl::StatusOr<uint32_t> WaitWhileEquals(const uint32_t* word, uint32_t seen,
                                         std::chrono::nanoseconds timeout);
// The same for an 8-byte field. The kernel's futex compares 4-byte words,
// so the waiter sleeps on both halves at once (futex_waitv): a store that
// changes either half, then a notify, wakes it.
absl::StatusOr<uint64_t> WaitWhileEquals(const uint64_t* word, uint64_t seen,
                                         std::chrono::nanoseconds timeout);

// Wakes up to `count` waiters of the 4- or 8-byte field at `field` (the
// address of its first byte) and returns how many it woke: waiters of that
// field only, live ones only. 0 if count <= 0.
int NotifyFieldWaiters(const void* field, int count);

namespace internal {
// Tests only: makes 8-byte waits use the fallback for kernels without
// futex_waitv (sleep on the low half, look again every millisecond).
void ForceEightByteWaitFallbackForTesting(bool on);
}  // namespace internal

}  // namespace structd::shm

#endif  // STRUCTD_SHM_FIELD_WAIT_H_
