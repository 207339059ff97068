#include "structd/shm/move_lane.h"

#include <atomic>

namespace structd::shm {
namespace {

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

}  // namespace

bool OpenLane(const MoveContext& ctx, MoveKind kind) {
  A(ctx.lane->port).store(ctx.port, std::memory_order_relaxed);
  A(ctx.lane->op).store((uint64_t{static_cast<uint8_t>(kind)} << 56) | ctx.slot_index,
                        std::memory_order_seq_cst);
  if (ctx.gate == nullptr || A(*ctx.gate).load(std::memory_order_seq_cst) == 0) return true;
  CloseLane(ctx);
  return false;
}

void CloseLane(const MoveContext& ctx) { A(ctx.lane->op).store(0, std::memory_order_release); }

}  // namespace structd::shm
