#include "client/src/move_record.h"

#include <bit>
#include <thread>

namespace structd::client::internal {
namespace {

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

}  // namespace

MoveRecord::MoveRecord(shm::SessionRecord record, shm::Ref ref, uint32_t tag,
                       uint32_t incarnation)
    : record_(record), ref_(ref), tag_(tag), incarnation_(incarnation) {
  base::MutexLock lock(&mu_);
  // Slots that hold something belong to an earlier life of this process's
  // session (a record the daemon gave back after a restart): not ours to
  // reuse; the daemon releases them with the session.
  for (uint32_t i = shm::kRecordSlots; i-- > 0;) {
    if (SlotValue(i) != 0) continue;
    // A mark left on a free slot would let a release take the next
    // reference received into it from under its Owned.
    A(*record_.mark(i)).store(0, std::memory_order_relaxed);
    free_.push_back(i);
  }
}

MoveRecord::Lane::Lane(MoveRecord& record) : record_(record) {
  for (;;) {
    uint32_t busy = record_.lanes_busy_.load(std::memory_order_relaxed);
    if (busy != UINT32_MAX) {
      const uint32_t bit = std::countr_one(busy);
      if (record_.lanes_busy_.compare_exchange_weak(busy, busy | (uint32_t{1} << bit),
                                                    std::memory_order_acquire)) {
        index_ = bit;
        return;
      }
      continue;
    }
    std::this_thread::yield();  // 32 moves in flight in this process
  }
}

MoveRecord::Lane::~Lane() {
  record_.lanes_busy_.fetch_and(~(uint32_t{1} << index_), std::memory_order_release);
}

shm::MoveContext MoveRecord::Lane::Context(uint32_t index, shm::Ref port) const {
  return shm::MoveContext{record_.record_.lane(index_),
                          shm::SessionRecord::LaneId(record_.tag_, index_),
                          record_.record_.slot(index), index, port.bits(),
                          record_.record_.gate()};
}

std::optional<uint32_t> MoveRecord::TakeFreeSlot() {
  base::MutexLock lock(&mu_);
  if (free_.empty()) {
    // Given-up slots the daemon has cleared since are free again.
    std::erase_if(given_up_, [&](uint32_t i) {
      if (SlotValue(i) != 0) return false;
      // Unmarked before a receive fills it again (the receive's store of
      // the slot is a release: whoever sees the new reference sees this).
      A(*record_.mark(i)).store(0, std::memory_order_relaxed);
      free_.push_back(i);
      return true;
    });
  }
  if (free_.empty()) return std::nullopt;
  const uint32_t i = free_.back();
  free_.pop_back();
  return i;
}

std::vector<uint32_t> MoveRecord::TakeFreeSlots(uint32_t count) {
  base::MutexLock lock(&mu_);
  if (free_.size() < count + kKeptForReceives) return {};
  std::vector<uint32_t> out(free_.end() - count, free_.end());
  free_.resize(free_.size() - count);
  return out;
}

void MoveRecord::ReturnSlotsWhenEmpty(const std::vector<uint32_t>& indexes) {
  base::MutexLock lock(&mu_);
  given_up_.insert(given_up_.end(), indexes.begin(), indexes.end());
}

void MoveRecord::ReturnSlot(uint32_t index) {
  base::MutexLock lock(&mu_);
  free_.push_back(index);
}

void MoveRecord::GiveUp(uint32_t index) {
  A(*record_.mark(index)).store(1, std::memory_order_release);
  base::MutexLock lock(&mu_);
  given_up_.push_back(index);
}

uint64_t MoveRecord::SlotValue(uint32_t index) const {
  return A(*record_.slot(index)).load(std::memory_order_acquire);
}

size_t MoveRecord::free_slots() {
  base::MutexLock lock(&mu_);
  return free_.size();
}

}  // namespace structd::client::internal
