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
// Each thread pushes into rings of its own; a flush takes every thread's
// releases first, then every thread's retains, so a retain that happened
// before a release it takes (on any thread) is taken too.
//
// Thread safety: every method may be called from any thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "structd/base/mutex.h"
#include "structd/shm/ref.h"

namespace structd::client::internal {

class DeferredRefs {
 public:
  // One call to the daemon with at most max_per_call() refs, all or none.
  // Its status says what happened:
  //   OK            applied;
  //   UNAVAILABLE   not sent (the daemon restarts): kept, retried later;
  //   ABORTED       sent, outcome unknown (the reply was lost): a retain is
  //                 sent again (at worst the session holds one reference
  //                 too many until it ends: never one too few), a release
  //                 is not (at worst the instance lives until the
  //                 session's end: never freed twice);
  //   anything else refused (the session or the channel is gone, or a
  //                 member spoiled the instance): a batch is tried again
  //                 one ref at a time, and what is refused is dropped.
  using Apply = std::function<absl::Status(const std::vector<shm::Ref>& refs)>;
  // `background` false: nothing is applied but by Flush() (tests).
  DeferredRefs(Apply retain, Apply release, std::function<size_t()> max_per_call,
               bool background = true);
  // Applies what is queued (best effort) and stops the thread.
  ~DeferredRefs();
  DeferredRefs(const DeferredRefs&) = delete;
  DeferredRefs& operator=(const DeferredRefs&) = delete;

  // Queue one operation: a store into this thread's ring and a release
  // store of its head; no lock, no call to the daemon, no system call,
  // except on the first push into an empty ring (the background thread is
  // woken) and past kMaxPending (the caller applies everything).
  void Retain(shm::Ref ref);
  void Release(shm::Ref ref);
  // A thread with more queued than this applies it itself.
  static constexpr uint64_t kMaxPending = uint64_t{1} << 20;
  // Applies everything queued (by any thread) before the call. OK once
  // everything was applied or dropped (see Apply); UNAVAILABLE or ABORTED
  // if some of it stays queued for a retry.
  absl::Status Flush();
  // Operations queued and not yet applied.
  size_t pending();

 private:
  // One thread's pushes of one kind: an unbounded single-producer (that
  // thread), single-consumer (Flush, under flush_mu_) queue of chunks.
  class Ring {
   public:
    Ring();
    ~Ring();
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;
    // `*was_empty`: the consumer had taken everything before this push.
    void Push(shm::Ref ref, bool* was_empty);
    void DrainInto(std::vector<shm::Ref>& out);
    uint64_t size() const;

   private:
    struct Chunk {
      static constexpr uint64_t kSlots = 1024;
      uint64_t slots[kSlots];  // Ref bits
      std::atomic<Chunk*> next{nullptr};
    };
    alignas(64) std::atomic<uint64_t> head_{0};  // positions pushed
    Chunk* push_chunk_;                          // producer's: holds position push_base_..
    uint64_t push_base_ = 0;
    alignas(64) std::atomic<uint64_t> tail_{0};  // positions taken
    Chunk* take_chunk_;                          // consumer's: holds position take_base_..
    uint64_t take_base_ = 0;
  };
  struct ThreadBuffer {
    Ring retains;
    Ring releases;
  };
  // This thread's buffer for this queue, made and registered on first use;
  // null while the thread's thread_locals are being destroyed (an Owned
  // destroyed then takes the locked path: orphans_).
  ThreadBuffer* Mine();
  void Enqueue(shm::Ref ref, bool retain);
  // Starts the background thread, or wakes it.
  void Wake();
  bool NothingQueuedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();

  // Applies `refs` in calls of max_per_call(); leaves in `refs` what must
  // be kept for a retry, and returns why (OK if nothing is kept).
  absl::Status ApplyAll(const Apply& apply, std::vector<shm::Ref>& refs, bool retains);
  // Keeps what a flush could not apply for the next one.
  void Carry(std::vector<shm::Ref>& retains, std::vector<shm::Ref>& releases)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_);

  const Apply retain_;
  const Apply release_;
  const std::function<size_t()> max_per_call_;
  const bool background_;
  const uint64_t id_;  // unique per queue in the process, never reused
  mutable base::Mutex mu_;
  base::CondVar wake_;
  // Every thread's buffer; one whose thread is gone (only this holds it)
  // is dropped once empty.
  std::vector<std::shared_ptr<ThreadBuffer>> buffers_ ABSL_GUARDED_BY(mu_);
  // Pushed by threads past their thread_locals' destruction.
  std::vector<shm::Ref> orphan_retains_ ABSL_GUARDED_BY(mu_);
  std::vector<shm::Ref> orphan_releases_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  base::Mutex flush_mu_;  // one flush at a time, so batches stay in order
  // Taken from the rings but not applied (the daemon was unavailable):
  // applied first by the next flush.
  std::vector<shm::Ref> carried_retains_ ABSL_GUARDED_BY(flush_mu_);
  std::vector<shm::Ref> carried_releases_ ABSL_GUARDED_BY(flush_mu_);
  std::atomic<size_t> carried_{0};  // their total, for the thread's wait
  std::thread thread_;    // started with the first operation
};

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_SRC_DEFERRED_REFS_H_
