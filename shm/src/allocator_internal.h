#ifndef STRUCTD_SHM_SRC_ALLOCATOR_INTERNAL_H_
#define STRUCTD_SHM_SRC_ALLOCATOR_INTERNAL_H_

// Helpers shared by allocator.cc and allocator_scan.cc (shm-internal).

#include <atomic>
#include <cstdint>

#include "structd/shm/format.h"

namespace structd::shm::internal {

inline constexpr uint64_t kNoSlab = ~uint64_t{0};

// (extent << 32) | offset-or-slab, and its halves.
inline uint64_t Pack(uint32_t hi, uint32_t lo) { return (uint64_t{hi} << 32) | lo; }
inline uint32_t Hi(uint64_t v) { return static_cast<uint32_t>(v >> 32); }
inline uint32_t Lo(uint64_t v) { return static_cast<uint32_t>(v); }

// The free-list link lives in the first payload word of a free block.
inline std::atomic_ref<uint64_t> Link(InstanceHeader& h) {
  return std::atomic_ref<uint64_t>(
      *reinterpret_cast<uint64_t*>(reinterpret_cast<uint8_t*>(&h) + kInstanceHeaderSize));
}

}  // namespace structd::shm::internal

#endif  // STRUCTD_SHM_SRC_ALLOCATOR_INTERNAL_H_
