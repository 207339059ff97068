#ifndef STRUCTD_SHM_FIELD_WATCH_H_
#define STRUCTD_SHM_FIELD_WATCH_H_

// A file descriptor that becomes readable when watched fields change: how
// a program that runs an event loop (epoll, poll, asio, libuv) waits for
// shared state without a thread per field.
//
//   auto watch = structd::shm::FieldWatch::Create();
//   auto id = (*watch)->Watch(book->version(), seen);   // one-shot
//   epoll_ctl(ep, EPOLL_CTL_ADD, (*watch)->fd(), &ev);   // EPOLLIN
//   ... epoll_wait says fd() is readable ...
//   for (uint64_t fired : (*watch)->TakeFired()) { read, then Watch again }
//
// A watch fires when its field no longer holds the value the caller saw,
// as Scalar<T>::WaitChanged returns (field_wait.h): a writer stores, then
// calls Notify. Under it, one thread per FieldWatch sleeps on every watched
// field at once (futex_waitv, Linux 5.16+) and writes an eventfd when a
// watch fires. What it costs, and the protocol, are in doc/client.md
// ("Waiting in an event loop").

#include <bit>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/base/mutex.h"
#include "structd/base/posix.h"
#include "structd/shm/field.h"

namespace structd::shm {

// Thread safety: every method may be called from any thread.
class FieldWatch {
 public:
  // Futex words one FieldWatch sleeps on: a 4-byte field takes one, an
  // 8-byte field two (its halves). futex_waitv takes 128; one is the
  // watch's own.
  static constexpr size_t kMaxWords = 127;

  // Starts the watch's thread and opens its eventfd.
  static absl::StatusOr<std::unique_ptr<FieldWatch>> Create();
  // Stops the thread and closes the descriptor.
  ~FieldWatch();
  FieldWatch(const FieldWatch&) = delete;
  FieldWatch& operator=(const FieldWatch&) = delete;

  // An eventfd (non-blocking, close-on-exec) that is readable once a watch
  // has fired and until TakeFired() is called. Valid for the life of this
  // object; do not close it.
  int fd() const { return event_fd_.get(); }

  // Arms a one-shot watch of `field`: it fires once the field no longer
  // holds `seen` (compared bit for bit), at once if it already does. The
  // id names it in TakeFired() and Unwatch(). RESOURCE_EXHAUSTED past
  // kMaxWords words (use another FieldWatch). REQUIRES: the field stays
  // mapped until the watch fires or is unwatched (a Channel keeps its
  // arena mapped while it lives).
  template <typename T>
  absl::StatusOr<uint64_t> Watch(const Scalar<T>& field, T seen)
    requires(sizeof(T) == 4 || sizeof(T) == 8)
  {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    return WatchBits(field.address(), sizeof(T), std::bit_cast<Bits>(seen));
  }
  // Disarms a watch that has not fired. False if there is none by that id
  // (it fired already, or was unwatched). Once it returns, the field may
  // be unmapped.
  bool Unwatch(uint64_t id);
  // The ids of the watches that fired since the last call, in the order
  // they fired; resets fd(). Each is disarmed: read the field, then Watch
  // it again with what you read. May be empty (a readiness that raced the
  // previous call).
  std::vector<uint64_t> TakeFired();
  // Armed watches, and the futex words they take.
  size_t armed() const;
  size_t words() const;

 private:
  struct Armed {
    uint64_t id;
    const void* address;
    uint32_t size;  // 4 or 8
    uint64_t seen;
  };
  explicit FieldWatch(base::UniqueFd event_fd);
  absl::StatusOr<uint64_t> WatchBits(const void* address, uint32_t size, uint64_t seen);
  // The thread: fires what changed, then sleeps on the rest and `control_`.
  void Run();
  // Moves the watches whose fields changed to fired_; true if any did.
  bool FireChangedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes fd() readable.
  void Signal();
  // Wakes the thread to look at armed_ again. REQUIRES: mu_.
  void InterruptLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const base::UniqueFd event_fd_;
  mutable base::Mutex mu_;
  std::vector<Armed> armed_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> fired_ ABSL_GUARDED_BY(mu_);
  size_t words_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The thread's own futex word: changed (under mu_) whenever armed_ or
  // stopping_ changes, so a sleep that began before sees it differ.
  alignas(4) uint32_t control_ = 0;
  std::thread thread_;
};

namespace internal {
// Tests only: makes every FieldWatch poll (every millisecond) as it does on
// kernels without futex_waitv.
void ForceFieldWatchPollingForTesting(bool on);
}  // namespace internal

}  // namespace structd::shm

#endif  // STRUCTD_SHM_FIELD_WATCH_H_
