#include "structd/shm/local_recycle.h"

#include <atomic>

namespace structd::shm {
namespace {

// Zeroes with relaxed atomic stores, not memset: the instance stays
// published (its type index is never cleared), so views of the old one,
// in this process or another, may be reading its fields (atomically)
// while it is zeroed. They read zeros or old values, never a torn word.
void ZeroPayload(uint8_t* payload, uint32_t bytes) {
  uint32_t i = 0;
  for (; i + 8 <= bytes; i += 8) {  // the payload starts 16-byte aligned
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(payload + i))
        .store(0, std::memory_order_relaxed);
  }
  for (; i < bytes; ++i) std::atomic_ref<uint8_t>(payload[i]).store(0, std::memory_order_relaxed);
}

}  // namespace

std::optional<InstancePtr> RecycleSoleInstance(const InstancePtr& instance, uint32_t type_index,
                                               uint32_t payload_bytes) {
  if (!instance || !instance.Fits(payload_bytes)) return std::nullopt;
  InstanceHeader& h = instance.header();
  const Ref ref = instance.ref();
  const uint32_t gen = h.generation.load(std::memory_order_acquire);
  // FreeBlock retires a block whose generation would wrap; leave that to it.
  if ((gen & kGenerationMask) != ref.generation_tag() || gen + 1 >= kGenerationMask ||
      h.type_index.load(std::memory_order_acquire) != type_index) {
    return std::nullopt;
  }
  uint32_t one = 1;
  if (!h.refcount.compare_exchange_strong(one, 0, std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
    return std::nullopt;
  }
  // The claim is ours. If the block changed hands between the checks and
  // the claim (only possible if this session's reference was released
  // behind its back: a lost session, a member scribbling), the instance
  // claimed is someone else's: put its refcount back untouched.
  if (h.generation.load(std::memory_order_acquire) != gen ||
      h.type_index.load(std::memory_order_acquire) != type_index) {
    h.refcount.store(1, std::memory_order_release);
    return std::nullopt;
  }
  h.generation.store(gen + 1, std::memory_order_release);
  ZeroPayload(instance.payload(), payload_bytes);
  h.refcount.store(1, std::memory_order_release);
  return InstancePtr(instance.block(), Ref::Make(ref.extent_id(), ref.offset(), gen + 1),
                     instance.capacity());
}

}  // namespace structd::shm
