#ifndef STRUCTD_CLIENT_SRC_MOVE_RECORD_H_
#define STRUCTD_CLIENT_SRC_MOVE_RECORD_H_

// This process's side of its session record (shm/session_record.h): which
// lanes its threads are using and which slots hold references of its
// Owneds, so that Port<T> moves references in shared memory without a
// call (doc/ports.md, "Moves in shared memory").
//
// Slots: free (0, ours to receive into), used (an Owned holds the
// reference there), or given up (marked: a release of its reference is
// queued; the daemon clears the slot when it applies it, and the slot is
// free again once it reads 0). Lanes: a move takes one for its duration.
//
// Thread safety: every method may be called from any thread.

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "structd/base/mutex.h"
#include "structd/client/owned.h"
#include "structd/shm/port_ring.h"
#include "structd/shm/ref.h"
#include "structd/shm/session_record.h"

namespace structd::client::internal {

// An Owned's slot, as it keeps it: the record's incarnation (a record of
// an arena that was replaced is never written) and the slot's index.
// kNoSlot (structd/client/owned.h): none, the reference is in the ledger.
inline uint32_t SlotCode(uint32_t incarnation, uint32_t index) {
  return (incarnation << 16) | index;
}
inline uint32_t SlotIncarnation(uint32_t code) { return code >> 16; }
inline uint32_t SlotIndex(uint32_t code) { return code & 0xffff; }
// The incarnation of the record opened while `arenas_mapped` arenas had
// been mapped (Channel::arenas_mapped_): 1 to 65534.
inline uint32_t RecordIncarnation(uint64_t arenas_mapped) {
  return static_cast<uint32_t>(arenas_mapped % 65534 + 1);
}

class MoveRecord {
 public:
  // `incarnation` (1 to 65534) tells this record from those of arenas
  // mapped before; `tag` is the daemon's (its lane ids).
  MoveRecord(shm::SessionRecord record, shm::Ref ref, uint32_t tag, uint32_t incarnation);
  MoveRecord(const MoveRecord&) = delete;
  MoveRecord& operator=(const MoveRecord&) = delete;

  uint32_t incarnation() const { return incarnation_; }
  shm::Ref ref() const { return ref_; }

  // A lane for one move, given back by the destructor.
  class Lane {
   public:
    explicit Lane(MoveRecord& record);
    ~Lane();
    Lane(const Lane&) = delete;
    Lane& operator=(const Lane&) = delete;
    // The move of slot `index` under this lane, to or from `port`.
    shm::MoveContext Context(uint32_t index, shm::Ref port) const;

   private:
    MoveRecord& record_;
    uint32_t index_;
  };

  // A free slot (its word 0), or none if every slot is used or given up
  // and not yet cleared by the daemon (flush, then try again).
  std::optional<uint32_t> TakeFreeSlot();
  // `count` free slots for an allocation into the record, or none if that
  // would leave fewer than kKeptForReceives free (received messages need
  // slots more: allocations fall back to the ledger).
  std::vector<uint32_t> TakeFreeSlots(uint32_t count);
  static constexpr size_t kKeptForReceives = 256;
  // A slot whose word is 0 again (a send took its reference, a receive
  // found nothing).
  void ReturnSlot(uint32_t index);
  // Slots an allocation may or may not have filled (its reply was lost):
  // free again once they read 0.
  void ReturnSlotsWhenEmpty(const std::vector<uint32_t>& indexes);
  // Marks slot `index` given up: its reference's queued release takes it
  // from there (the caller queues it after this). REQUIRES: the slot holds
  // a reference of an Owned that is going away.
  void GiveUp(uint32_t index);
  // The reference slot `index` holds now, and its word.
  uint64_t SlotValue(uint32_t index) const;
  uint64_t* SlotWord(uint32_t index) const { return record_.slot(index); }
  size_t free_slots();

 private:
  shm::SessionRecord record_;
  const shm::Ref ref_;
  const uint32_t tag_;
  const uint32_t incarnation_;
  // A bit per lane in use by a thread of this process.
  std::atomic<uint32_t> lanes_busy_{0};
  static_assert(shm::kRecordLanes == 32);
  base::Mutex mu_;
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> given_up_ ABSL_GUARDED_BY(mu_);
};

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_SRC_MOVE_RECORD_H_
