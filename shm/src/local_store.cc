#include "structd/shm/local_store.h"

#include <atomic>

#include "local_refcount.h"

namespace structd::shm {
namespace {

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

std::atomic<int> g_stop_after_step{0};
std::atomic<void (*)()> g_after_step4{nullptr};

bool StopHere(int step) { return internal::TakeStop(g_stop_after_step, step); }

}  // namespace

namespace internal {
void StopStoreAfterStepForTesting(int step) {
  g_stop_after_step.store(step, std::memory_order_relaxed);
}
void RunAfterStoreStep4ForTesting(void (*hook)()) {
  g_after_step4.store(hook, std::memory_order_relaxed);
}
}  // namespace internal

LocalStoreResult StoreFromSlot(MoveContext ctx, const InstancePtr& holder, uint64_t* field,
                               uint64_t* guard_slot) {
  ctx.port = holder.ref().bits();
  A(ctx.lane->spare).store(0, std::memory_order_relaxed);  // published by OpenLane's op store
  if (!OpenLane(ctx, MoveKind::kStore)) return {LocalStore::kGated, Ref(), Ref()};
  InstanceHeader& h = holder.header();
  if (!internal::RaiseCount(h)) {
    CloseLane(ctx);
    return {LocalStore::kRefused, Ref(), Ref()};
  }
  const Ref guarded = internal::RaisedInstance(holder);
  if (guarded != holder.ref()) {
    // The count raised is the block's next instance's: nothing stored.
    A(*guard_slot).store(guarded.bits(), std::memory_order_release);
    CloseLane(ctx);
    return {LocalStore::kHolderGone, Ref(), guarded};
  }
  if (StopHere(2)) return {LocalStore::kStored, Ref(), Ref()};
  // Step 3 as a compare-and-swap, with the value it replaces written in
  // the lane's spare word first: from the swap until step 4 the old
  // reference is named by nothing else, and a census that finds this lane
  // still busy (a stopped process) must know to leave it alone.
  const uint64_t value = A(*ctx.slot).load(std::memory_order_acquire);
  uint64_t old = A(*field).load(std::memory_order_acquire);
  for (int attempt = 0;; ++attempt) {
    if (attempt == internal::kMaxLocalRefcountAttempts) {
      // Another writer keeps changing the field: give up, guard dropped.
      Ref guard;
      if (!internal::LowerCountIfNotLast(h)) {
        A(*guard_slot).store(guarded.bits(), std::memory_order_release);
        guard = guarded;
      }
      CloseLane(ctx);
      return {LocalStore::kRefused, Ref(), guard};
    }
    A(ctx.lane->spare).store(old, std::memory_order_release);
    if (A(*field).compare_exchange_strong(old, value, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
      break;
    }
  }
  if (StopHere(3)) return {LocalStore::kStored, Ref::FromBits(old), Ref()};
  A(*ctx.slot).store(old, std::memory_order_release);
  if (StopHere(4)) return {LocalStore::kStored, Ref::FromBits(old), Ref()};
  if (void (*hook)() = g_after_step4.exchange(nullptr, std::memory_order_relaxed)) hook();
  Ref guard;
  if (!internal::LowerCountIfNotLast(h)) {
    A(*guard_slot).store(guarded.bits(), std::memory_order_release);
    guard = guarded;
  }
  CloseLane(ctx);
  return {LocalStore::kStored, Ref::FromBits(old), guard};
}

}  // namespace structd::shm
