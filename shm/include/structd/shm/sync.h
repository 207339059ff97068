#ifndef STRUCTD_SHM_SYNC_H_
#define STRUCTD_SHM_SYNC_H_

// mutex and condition fields: process-shared synchronization that lives
// inside instances.
//
// A mutex field (64 bytes) holds a glibc robust, process-shared,
// error-checking pthread mutex (futex-based; the kernel marks it when the
// owning thread dies, even by SIGKILL) followed by the owner's pid. The
// owner (daemon) initializes it when the instance is allocated.
//
// A condition field (8 bytes) is a futex sequence word and a waiter count.
// It pairs with any mutex field. pthread_cond_t is not used because it
// cannot report how many waiters a notify woke.

#include <chrono>
#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"

namespace structd::shm {

class MutexField;

// Holds a mutex field locked; unlocks when destroyed or on Unlock().
// Move-only. Not to be passed to another thread (robust mutexes are owned
// by a thread).
class MutexGuard {
 public:
  MutexGuard() = default;
  MutexGuard(MutexGuard&& o) noexcept
      : mutex_(std::exchange(o.mutex_, nullptr)),
        owner_died_(o.owner_died_) {}
  MutexGuard& operator=(MutexGuard&& o) noexcept;
  MutexGuard(const MutexGuard&) = delete;
  MutexGuard& operator=(const MutexGuard&) = delete;
  ~MutexGuard() { Unlock(); }

  // True if the previous owner died while holding the mutex. The mutex has
  // been made consistent again; the data it protects may be half-updated
  // and is the new owner's to repair.
  bool owner_died() const { return owner_died_; }
  bool owns_lock() const { return mutex_ != nullptr; }
  void Unlock();

 private:
  friend class MutexField;
  friend class ConditionField;
  MutexGuard(void* mutex, bool owner_died)
      : mutex_(mutex), owner_died_(owner_died) {}
  void* mutex_ = nullptr;  // the field's pthread_mutex_t; null if unlocked
  bool owner_died_ = false;
};

class MutexField {
 public:
  // REQUIRES: `p` is an 8-aligned mutex field of a mapped instance.
  explicit MutexField(void* p) : p_(p) {}

  // Makes the field a fresh unlocked robust process-shared mutex. Owner
  // side only, before the instance is published.
  static void Initialize(void* p);
  // For a field whose processes are all gone (a restored snapshot; its
  // pids and robust-list links name nothing here): makes it a fresh mutex,
  // left owner-died if it was held, so the next locker is told the data
  // may be half-updated. Returns true if it was held. Owner side only,
  // before anyone can reach the instance.
  static bool ForgetHolder(void* p);

  // Blocks until locked. FailedPrecondition if this thread already holds
  // it, if the field is not an initialized mutex (damaged arena) or if it
  // became unrecoverable.
  absl::StatusOr<MutexGuard> Lock();
  // Unavailable if another thread holds it.
  absl::StatusOr<MutexGuard> TryLock();
  // DeadlineExceeded if not locked within `timeout`.
  absl::StatusOr<MutexGuard> LockFor(std::chrono::nanoseconds timeout);

  // Pid of the process that holds it, 0 if unlocked. Best effort (for
  // inspection): may be the pid of a holder that has died.
  uint32_t owner_pid() const;

 private:
  absl::StatusOr<MutexGuard> Finish(int rc, const char* op);
  void* p_;
};

class ConditionField {
 public:
  // REQUIRES: `p` is a 4-aligned condition field of a mapped instance.
  explicit ConditionField(void* p) : p_(p) {}

  // Atomically unlocks `guard`'s mutex and sleeps until notified (or
  // spuriously woken); relocks before returning. If the relock finds the
  // previous owner dead, guard.owner_died() becomes true.
  // REQUIRES: guard.owns_lock().
  absl::Status Wait(MutexGuard& guard);
  // One wait of at most `timeout`: true if woken (or spuriously), false if
  // the time ran out. Relocks before returning, as Wait. For callers that
  // check their own predicate (bindings to other languages).
  absl::StatusOr<bool> WaitOnceFor(MutexGuard& guard, std::chrono::nanoseconds timeout) {
    absl::Status s = WaitUntil(guard, std::chrono::steady_clock::now() + timeout);
    if (absl::IsDeadlineExceeded(s)) return false;
    if (!s.ok()) return s;
    return true;
  }
  // Waits until `pred()` holds (checked with the mutex held) or `timeout`
  // passes; returns pred()'s final value.
  template <typename Pred>
  absl::StatusOr<bool> WaitFor(MutexGuard& guard,
                               std::chrono::nanoseconds timeout, Pred pred);
  // Wakes up to `count` waiters; returns how many the kernel woke.
  int Notify(int count = 1);
  int NotifyAll();
  // Zeros the waiter count, keeping the sequence (MutexField::ForgetHolder's
  // case: the waiters it counted are gone).
  static void ForgetWaiters(void* p);

 private:
  // Returns DeadlineExceeded on timeout.
  absl::Status WaitUntil(MutexGuard& guard,
                         std::chrono::steady_clock::time_point deadline);
  void* p_;
};

template <typename Pred>
absl::StatusOr<bool> ConditionField::WaitFor(MutexGuard& guard,
                                             std::chrono::nanoseconds timeout,
                                             Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    absl::Status s = WaitUntil(guard, deadline);
    if (absl::IsDeadlineExceeded(s)) return pred();
    if (!s.ok()) return s;
  }
  return true;
}

}  // namespace structd::shm

#endif  // STRUCTD_SHM_SYNC_H_
