#ifndef STRUCTD_CLIENT_SRC_DEFERRED_REFS_H_
#define STRUCTD_CLIENT_SRC_DEFERRED_REFS_H_

// Retains and releases of references the session already owns (Owned<T>
// destruction and Clone), taken off the caller's path: queued in this
// process and applied by the daemon in batches by a background thread.
//
// Why this is exact after any crash: the daemon's ledger of the session
// only ever moves by applied batches. If the process dies with a queue,
// the daemon releases what the ledger says the session holds, which is
// what it held before the queued operations: the queued retains never
// happened, and the queued releases are done by the session's end.
//
// Why applying "every retain, then every release" is safe: at each flush
// the daemon's count of a ref goes from what it was to the number of
// Owneds of it alive when the queue was taken, never lower on the way. A
// Clone needs a live Owned of the same ref, so a ref that reaches zero
// has no Owned left anywhere in this session. (doc/lifecycle.md)
//
// Thread safety: every method may be called from any thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "structd/base/mutex.h"
#include "structd/shm/ref.h"

namespace structd::client::internal {

class DeferredRefs {
 public:
  // Blocking calls to the daemon. OK, or FAILED_PRECONDITION / NOT_FOUND
  // (the session or the channel is gone, and the references with it), drop
  // what was sent; any other status keeps it queued for a retry.
  using Apply = std::function<absl::Status(const std::vector<shm::Ref>& refs)>;
  // `background` false: nothing is applied but by Flush() (tests).
  DeferredRefs(Apply retain, Apply release, bool background = true);
  // Applies what is queued (best effort) and stops the thread.
  ~DeferredRefs();
  DeferredRefs(const DeferredRefs&) = delete;
  DeferredRefs& operator=(const DeferredRefs&) = delete;

  // Queue one operation; no call to the daemon, no system call unless the
  // background thread must be woken or the queue is full (then the
  // caller applies it).
  void Retain(shm::Ref ref);
  void Release(shm::Ref ref);
  // Applies everything queued before the call; the status of the first
  // failure (what failed stays queued unless it was dropped, see Apply).
  absl::Status Flush();
  // Operations queued and not yet applied.
  size_t pending() const;

  // A full queue is applied by the caller that fills it.
  static constexpr size_t kMaxPending = size_t{1} << 20;

 private:
  void Enqueue(shm::Ref ref, bool retain);
  void Run();

  const Apply retain_;
  const Apply release_;
  mutable base::Mutex mu_;
  base::CondVar wake_;
  std::vector<shm::Ref> retains_ ABSL_GUARDED_BY(mu_);
  std::vector<shm::Ref> releases_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  const bool background_;
  base::Mutex flush_mu_;  // one flush at a time, so batches stay in order
  // Emptied batches kept for their capacity: swapped in for the queues at
  // the next flush, so enqueueing rarely allocates.
  std::vector<shm::Ref> spare_retains_ ABSL_GUARDED_BY(flush_mu_);
  std::vector<shm::Ref> spare_releases_ ABSL_GUARDED_BY(flush_mu_);
  std::thread thread_;    // started with the first operation
};

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_SRC_DEFERRED_REFS_H_
