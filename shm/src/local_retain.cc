#include "structd/shm/local_retain.h"

#include <atomic>

#include "local_refcount.h"

namespace structd::shm {
namespace {

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

std::atomic<int> g_stop_after_step{0};

bool StopHere(int step) { return internal::TakeStop(g_stop_after_step, step); }

}  // namespace

namespace internal {
void StopRetainAfterStepForTesting(int step) {
  g_stop_after_step.store(step, std::memory_order_relaxed);
}
}  // namespace internal

LocalRetainResult RetainIntoSlot(MoveContext ctx, const InstancePtr& instance) {
  const Ref ref = instance.ref();
  ctx.port = ref.bits();
  if (!OpenLane(ctx, MoveKind::kRetain)) return {LocalRetain::kGated, Ref()};
  InstanceHeader& h = instance.header();
  if (!internal::RaiseCount(h)) {
    CloseLane(ctx);
    return {LocalRetain::kRefused, Ref()};
  }
  if (StopHere(2)) return {LocalRetain::kRetained, Ref()};
  const Ref held = internal::RaisedInstance(instance);
  A(*ctx.slot).store(held.bits(), std::memory_order_release);
  if (StopHere(4)) return {LocalRetain::kRetained, held};
  CloseLane(ctx);
  return {held == ref ? LocalRetain::kRetained : LocalRetain::kOtherInstance, held};
}

}  // namespace structd::shm
