#include "structd/shm/local_retain.h"

#include <atomic>

namespace structd::shm {
namespace {

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

// As Allocator::Retain: honest writers change a refcount a few times per
// operation; one that keeps changing is scribbled, and the daemon's call
// (which says so) is the better place to find out.
constexpr int kMaxRefcountAttempts = 1000;

std::atomic<int> g_stop_after_step{0};

bool StopHere(int step) {
  if (g_stop_after_step.load(std::memory_order_relaxed) != step) return false;
  g_stop_after_step.store(0, std::memory_order_relaxed);
  return true;
}

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
  uint32_t rc = h.refcount.load(std::memory_order_acquire);
  for (int attempt = 0;; ++attempt) {
    if (rc == 0 || rc == UINT32_MAX || attempt == kMaxRefcountAttempts) {
      CloseLane(ctx);
      return {LocalRetain::kRefused, Ref()};
    }
    if (h.refcount.compare_exchange_weak(rc, rc + 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
      break;
    }
  }
  if (StopHere(2)) return {LocalRetain::kRetained, Ref()};
  // The block's instance now cannot be freed or recycled (its count is
  // above 1 or ours alone): the generation read here is the one whose
  // count was raised.
  const uint32_t gen = h.generation.load(std::memory_order_acquire);
  const Ref held =
      (gen & kGenerationMask) == ref.generation_tag() ? ref : Ref::Make(ref.extent_id(), ref.offset(), gen);
  A(*ctx.slot).store(held.bits(), std::memory_order_release);
  if (StopHere(4)) return {LocalRetain::kRetained, held};
  CloseLane(ctx);
  return {held == ref ? LocalRetain::kRetained : LocalRetain::kOtherInstance, held};
}

}  // namespace structd::shm
