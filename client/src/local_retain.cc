// Channel: references retained without a call (shm/local_retain.h;
// doc/lifecycle.md, "Retain"): the count raised in shared memory, the
// reference kept in a slot of the session record, the daemon's Retain
// call only where that cannot be done.
#include <optional>

#include "client/src/connection.h"
#include "client/src/move_record.h"
#include "structd/client/channel.h"
#include "structd/shm/local_retain.h"

namespace structd::client {

absl::Status Channel::RetainViews(uint32_t type_slot, const std::vector<StructView>& views,
                                  std::vector<uint32_t>* held_in) {
  held_in->assign(views.size(), internal::kNoSlot);
  std::vector<Ref> by_call;
  for (size_t i = 0; i < views.size(); ++i) {
    if (std::optional<uint32_t> slot = RetainIntoSlot(type_slot, views[i])) {
      (*held_in)[i] = *slot;
    } else {
      by_call.push_back(views[i].ref());
    }
  }
  if (by_call.empty()) return absl::OkStatus();
  absl::Status s = RetainRefs(by_call);
  if (!s.ok()) {
    // None: what was retained here is given back.
    for (size_t i = 0; i < views.size(); ++i) {
      if ((*held_in)[i] != internal::kNoSlot) DropSlot((*held_in)[i], views[i].ref());
    }
    held_in->clear();
  }
  return s;
}

std::optional<uint32_t> Channel::RetainIntoSlot(uint32_t type_slot, const StructView& view) {
  if (type_slot >= internal::kFastTypeSlots || !connection_->session_ok()) return std::nullopt;
  internal::MoveRecord* moves = Moves();
  if (moves == nullptr) return std::nullopt;
  // The view must be of the arena the record is in (a replaced one stays
  // mapped, and its ref bits mean something else in the new one), and
  // resolve to the block it shows.
  const FastType* f = fast_types_[type_slot].load(std::memory_order_acquire);
  shm::InstancePtr instance;
  if (f == nullptr || internal::RecordIncarnation(f->arena_number) != moves->incarnation() ||
      !f->arena.TryResolveTyped(view.ref(), f->block, &instance) ||
      instance.block() != view.block_) {
    return std::nullopt;
  }
  std::optional<uint32_t> index = moves->TakeFreeSlot();
  if (!index) {
    (void)Flush();  // given-up slots are cleared by the releases it sends
    index = moves->TakeFreeSlot();
    if (!index) return std::nullopt;
  }
  shm::LocalRetainResult got;
  {
    internal::MoveRecord::Lane lane(*moves);
    got = shm::RetainIntoSlot(lane.Context(*index, Ref()), instance);
  }
  const uint32_t code = internal::SlotCode(moves->incarnation(), *index);
  switch (got.outcome) {
    case shm::LocalRetain::kRetained:
      return code;
    case shm::LocalRetain::kOtherInstance:
      // A reference to the block's next instance: given back; the call
      // then says the ref is stale.
      DropSlot(code, got.held);
      return std::nullopt;
    case shm::LocalRetain::kGated:
    case shm::LocalRetain::kRefused:
      break;
  }
  moves->ReturnSlot(*index);
  return std::nullopt;
}

}  // namespace structd::client
