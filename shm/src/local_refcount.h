#ifndef STRUCTD_SHM_SRC_LOCAL_REFCOUNT_H_
#define STRUCTD_SHM_SRC_LOCAL_REFCOUNT_H_

// Refcount changes a member makes without the daemon, under a lane
// (local_retain.cc, local_store.cc). Read-modify-writes, never a load and
// a store: the daemon, other members and a sole owner recycling in place
// (shm/local_recycle.h) change the same word.

#include <atomic>
#include <cstdint>

#include "structd/shm/arena.h"
#include "structd/shm/format.h"
#include "structd/shm/ref.h"

namespace structd::shm::internal {

// As Allocator::Retain: honest writers change a refcount a few times per
// operation; one that keeps changing is scribbled, and the daemon's call
// (which says so) is the better place to find out.
inline constexpr int kMaxLocalRefcountAttempts = 1000;

// n -> n + 1, only from 0 < n < UINT32_MAX; false if not done.
inline bool RaiseCount(InstanceHeader& h) {
  uint32_t rc = h.refcount.load(std::memory_order_acquire);
  for (int attempt = 0; attempt < kMaxLocalRefcountAttempts; ++attempt) {
    if (rc == 0 || rc == UINT32_MAX) return false;
    if (h.refcount.compare_exchange_weak(rc, rc + 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
      return true;
    }
  }
  return false;
}

// n -> n - 1, only from n >= 2 (the last reference is the daemon's to
// drop: dropping it frees); false if not done.
inline bool LowerCountIfNotLast(InstanceHeader& h) {
  uint32_t rc = h.refcount.load(std::memory_order_acquire);
  for (int attempt = 0; attempt < kMaxLocalRefcountAttempts; ++attempt) {
    if (rc < 2) return false;
    if (h.refcount.compare_exchange_weak(rc, rc - 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
      return true;
    }
  }
  return false;
}

// Tests' stop points (StopRetainAfterStepForTesting and the like): true,
// once, when `stop` holds `step`; the operation then returns as a kill
// there would leave it.
inline bool TakeStop(std::atomic<int>& stop, int step) {
  if (stop.load(std::memory_order_relaxed) != step) return false;
  stop.store(0, std::memory_order_relaxed);
  return true;
}

// After RaiseCount on `instance`'s header: the instance whose count was
// raised. It cannot be freed or recycled while that count is in it, so
// the generation read now is its; if it is not the ref's, the block was
// recycled or reused since the caller resolved it.
inline Ref RaisedInstance(const InstancePtr& instance) {
  const Ref ref = instance.ref();
  const uint32_t gen = instance.header().generation.load(std::memory_order_acquire);
  return (gen & kGenerationMask) == ref.generation_tag()
             ? ref
             : Ref::Make(ref.extent_id(), ref.offset(), gen);
}

}  // namespace structd::shm::internal

#endif  // STRUCTD_SHM_SRC_LOCAL_REFCOUNT_H_
