// Channel: stores into ref fields without a call (shm/local_store.h;
// doc/lifecycle.md, "Store"): the reference moves from a slot of the
// session record into the field, the field's previous reference comes
// back into that slot and is given up from there, as any drop.
#include <optional>

#include "client/src/connection.h"
#include "client/src/move_record.h"
#include "structd/client/channel.h"
#include "structd/shm/local_store.h"

namespace structd::client {

bool Channel::StoreFromSlot(Ref holder_ref, uint64_t* field, uint32_t slot) {
  if (!connection_->session_ok()) return false;
  internal::MoveRecord* moves = Moves();
  if (moves == nullptr ||
      (slot != internal::kNoSlot && internal::SlotIncarnation(slot) != moves->incarnation())) {
    return false;
  }
  // The holder, resolved in the arena the record is in (a replaced one
  // stays mapped, and its refs mean something else in the new one); the
  // field must be a word of its payload.
  shm::InstancePtr holder;
  {
    base::MutexLock lock(&mu_);
    if (internal::RecordIncarnation(arenas_mapped_) != moves->incarnation()) return false;
    absl::StatusOr<shm::InstancePtr> resolved = arena_->Resolve(holder_ref);
    if (!resolved.ok()) return false;
    holder = *resolved;
  }
  const auto* word = reinterpret_cast<const uint8_t*>(field);
  if (word < holder.payload() || word + sizeof(uint64_t) > holder.block() + holder.capacity() ||
      (word - holder.block()) % sizeof(uint64_t) != 0) {
    return false;
  }
  // The value's slot (a free one to clear the field) and one for the
  // guard, in case it ends up the holder's last reference.
  std::optional<uint32_t> value_index;
  if (slot != internal::kNoSlot) value_index = internal::SlotIndex(slot);
  std::optional<uint32_t> guard_index;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!value_index) value_index = moves->TakeFreeSlot();
    if (!guard_index) guard_index = moves->TakeFreeSlot();
    if (value_index && guard_index) break;
    (void)Flush();  // given-up slots are cleared by the releases it sends
  }
  auto give_back_free = [&] {
    if (guard_index) moves->ReturnSlot(*guard_index);
    if (slot == internal::kNoSlot && value_index) moves->ReturnSlot(*value_index);
  };
  if (!value_index || !guard_index) {
    give_back_free();
    return false;
  }
  shm::LocalStoreResult got;
  {
    internal::MoveRecord::Lane lane(*moves);
    got = shm::StoreFromSlot(lane.Context(*value_index, Ref()), holder, field,
                             moves->SlotWord(*guard_index));
  }
  const uint32_t value_code = internal::SlotCode(moves->incarnation(), *value_index);
  const uint32_t guard_code = internal::SlotCode(moves->incarnation(), *guard_index);
  switch (got.outcome) {
    case shm::LocalStore::kStored:
      if (got.old.is_null()) {
        moves->ReturnSlot(*value_index);
      } else {
        DropSlot(value_code, got.old);  // the field's previous reference, released
      }
      if (got.guard.is_null()) {
        moves->ReturnSlot(*guard_index);
      } else {
        DropSlot(guard_code, got.guard);  // the holder's last reference: freed by the daemon
      }
      return true;
    case shm::LocalStore::kHolderGone:
      DropSlot(guard_code, got.guard);
      guard_index.reset();
      break;
    case shm::LocalStore::kGated:
    case shm::LocalStore::kRefused:
      break;
  }
  give_back_free();
  return false;
}

}  // namespace structd::client
