#include "structd/shm/sync.h"

#include <linux/futex.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "futex.h"
#include "structd/base/posix.h"
#include "structd/shm/layout.h"

namespace structd::shm {
namespace {

// Layout of a mutex field.
struct MutexFieldData {
  pthread_mutex_t mutex;
  alignas(8) uint32_t owner_pid;  // atomic_ref; 0 when unlocked
  uint32_t reserved;
};
static_assert(sizeof(MutexFieldData) <= kMutexFieldSize,
              "pthread_mutex_t must fit the 64-byte mutex field");

// Layout of a condition field.
struct ConditionFieldData {
  uint32_t seq;      // futex word, bumped by every notify
  uint32_t waiters;  // hint: threads inside Wait
};
static_assert(sizeof(ConditionFieldData) == kConditionFieldSize);

MutexFieldData* Data(void* p) { return static_cast<MutexFieldData*>(p); }

std::atomic_ref<uint32_t> OwnerPid(void* p) {
  return std::atomic_ref<uint32_t>(Data(p)->owner_pid);
}

// glibc's kind bits for a robust, process-shared mutex (nptl internals,
// stable ABI): PTHREAD_MUTEX_ROBUST_NORMAL_NP (16) and the pshared bit
// (128). A zeroed or scribbled field lacks them.
bool LooksInitialized(void* p) {
  int kind = Data(p)->mutex.__data.__kind;
  return (kind & 16) != 0 && (kind & 128) != 0;
}

absl::Status NotInitialized() {
  return absl::FailedPreconditionError(
      "mutex field: not an initialized mutex (the instance was not "
      "allocated by structd, or the arena is damaged; run 'structctl "
      "check')");
}

timespec ToTimespec(std::chrono::nanoseconds d) {
  if (d.count() < 0) d = std::chrono::nanoseconds(0);
  timespec ts;
  ts.tv_sec = static_cast<time_t>(d.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(d.count() % 1000000000);
  return ts;
}

// pthread_mutex_clocklock, told to ThreadSanitizer: GCC 12's TSan does not
// intercept it, so without these annotations it would not see the lock
// taken and would report the matching unlock as "unlock of an unlocked
// mutex". A timed lock is a try-lock that may fail, as TSan models it.
int ClockLock(pthread_mutex_t* m, const timespec* abs) {
#if defined(__SANITIZE_THREAD__)
  __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
  int rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, abs);
  bool locked = rc == 0 || rc == EOWNERDEAD;
  __tsan_mutex_post_lock(
      m, __tsan_mutex_try_lock | (locked ? 0u : __tsan_mutex_try_lock_failed), 0);
  return rc;
#else
  return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, abs);
#endif
}

}  // namespace

MutexGuard& MutexGuard::operator=(MutexGuard&& o) noexcept {
  if (this != &o) {
    Unlock();
    mutex_ = std::exchange(o.mutex_, nullptr);
    owner_died_ = o.owner_died_;
  }
  return *this;
}

void MutexGuard::Unlock() {
  if (mutex_ == nullptr) return;
  uint32_t pid = OwnerPid(mutex_).exchange(0, std::memory_order_relaxed);
  if (pthread_mutex_unlock(&Data(mutex_)->mutex) != 0) {
    // Not ours to unlock (the guard crossed threads): leave it as it was.
    OwnerPid(mutex_).store(pid, std::memory_order_relaxed);
  }
  mutex_ = nullptr;
}

void MutexField::Initialize(void* p) {
  std::memset(p, 0, kMutexFieldSize);
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(&Data(p)->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
}

bool MutexField::ForgetHolder(void* p) {
  // The futex word of glibc's mutex (__lock): 0 when unlocked; the owner's
  // tid, possibly with FUTEX_WAITERS / FUTEX_OWNER_DIED, otherwise.
  const bool held = std::atomic_ref<int>(Data(p)->mutex.__data.__lock).load() != 0;
  Initialize(p);
  // What the kernel leaves when a robust mutex's owner dies: no owner,
  // FUTEX_OWNER_DIED. glibc's next lock takes it and returns EOWNERDEAD.
  if (held) std::atomic_ref<int>(Data(p)->mutex.__data.__lock).store(FUTEX_OWNER_DIED);
  return held;
}

absl::StatusOr<MutexGuard> MutexField::Finish(int rc, const char* op) {
  bool owner_died = false;
  switch (rc) {
    case 0:
      break;
    case EOWNERDEAD:
      // We hold it now; mark it consistent so it stays usable and tell
      // the caller, who must repair what it protects.
      pthread_mutex_consistent(&Data(p_)->mutex);
      owner_died = true;
      break;
    case EBUSY:
      return absl::UnavailableError(
          "mutex field: held by another thread (try again, or use Lock)");
    case ETIMEDOUT:
      return absl::DeadlineExceededError(absl::StrFormat(
          "mutex field: not acquired in time (held by pid %d)", owner_pid()));
    case EDEADLK:
      return absl::FailedPreconditionError(
          "mutex field: already held by this thread (unlock its guard "
          "first)");
    case ENOTRECOVERABLE:
      return absl::FailedPreconditionError(
          "mutex field: unrecoverable (a previous owner died and the mutex "
          "was not made consistent)");
    default:
      return absl::InternalError(
          absl::StrFormat("mutex field: %s failed: %s", op, strerror(rc)));
  }
  OwnerPid(p_).store(static_cast<uint32_t>(base::CachedPid()),
                     std::memory_order_relaxed);
  return MutexGuard(p_, owner_died);
}

absl::StatusOr<MutexGuard> MutexField::Lock() {
  if (!LooksInitialized(p_)) return NotInitialized();
  return Finish(pthread_mutex_lock(&Data(p_)->mutex), "lock");
}

absl::StatusOr<MutexGuard> MutexField::TryLock() {
  if (!LooksInitialized(p_)) return NotInitialized();
  return Finish(pthread_mutex_trylock(&Data(p_)->mutex), "try_lock");
}

absl::StatusOr<MutexGuard> MutexField::LockFor(
    std::chrono::nanoseconds timeout) {
  if (!LooksInitialized(p_)) return NotInitialized();
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  timespec rel = ToTimespec(timeout);
  timespec abs{now.tv_sec + rel.tv_sec, now.tv_nsec + rel.tv_nsec};
  if (abs.tv_nsec >= 1000000000) {
    abs.tv_sec += 1;
    abs.tv_nsec -= 1000000000;
  }
  return Finish(ClockLock(&Data(p_)->mutex, &abs), "lock_for");
}

uint32_t MutexField::owner_pid() const {
  return OwnerPid(p_).load(std::memory_order_relaxed);
}

absl::Status ConditionField::Wait(MutexGuard& guard) {
  return WaitUntil(guard, std::chrono::steady_clock::time_point::max());
}

absl::Status ConditionField::WaitUntil(
    MutexGuard& guard, std::chrono::steady_clock::time_point deadline) {
  if (!guard.owns_lock()) {
    return absl::FailedPreconditionError(
        "condition field: wait needs a locked mutex guard");
  }
  auto* d = static_cast<ConditionFieldData*>(p_);
  std::atomic_ref<uint32_t> seq(d->seq);
  std::atomic_ref<uint32_t> waiters(d->waiters);
  waiters.fetch_add(1, std::memory_order_seq_cst);
  uint32_t observed = seq.load(std::memory_order_seq_cst);
  void* mutex = guard.mutex_;
  bool died_before = guard.owner_died_;
  guard.Unlock();
  absl::Status result = absl::OkStatus();
  if (internal::FutexWait(&d->seq, observed, deadline) == ETIMEDOUT) {
    result = absl::DeadlineExceededError("condition field: timed out");
  }
  waiters.fetch_sub(1, std::memory_order_relaxed);
  // Relock whatever happened: the caller's guard must hold the mutex again.
  MutexField m(mutex);
  absl::StatusOr<MutexGuard> relocked = m.Lock();
  if (!relocked.ok()) return relocked.status();
  guard = std::move(*relocked);
  guard.owner_died_ = guard.owner_died_ || died_before;
  return result;
}

int ConditionField::Notify(int count) {
  auto* d = static_cast<ConditionFieldData*>(p_);
  std::atomic_ref<uint32_t>(d->seq).fetch_add(1, std::memory_order_seq_cst);
  if (std::atomic_ref<uint32_t>(d->waiters).load(std::memory_order_seq_cst) ==
      0) {
    return 0;
  }
  return internal::FutexWake(&d->seq, count);
}

int ConditionField::NotifyAll() { return Notify(INT_MAX); }

void ConditionField::ForgetWaiters(void* p) {
  std::atomic_ref<uint32_t>(static_cast<ConditionFieldData*>(p)->waiters).store(0);
}

}  // namespace structd::shm
