#ifndef STRUCTD_SHM_PORT_RING_H_
#define STRUCTD_SHM_PORT_RING_H_

// The ring under a port (issue 18; doc/design/ports.md): a bounded
// multi-sender, multi-receiver queue of 8-byte references in shared
// memory, whose every move can be finished or undone exactly by someone
// else after the mover was killed.
//
// A message moves between a *slot* (a word that holds one reference its
// session owns; 0 when free) and a *cell* of the ring, under a *lane* (one
// move in flight, the robust futex's list_op_pending): the lane says which
// move and which slot; the cell, while it is being filled or emptied,
// carries the lane's id. From the lane, the cell and the slot, whoever
// repairs after a death (the daemon, RepairLane) knows what happened:
// sends are completed forward, receives are rolled back until the
// reference is in the receiver's slot. See doc/design/ports.md for the
// crash tables.
//
// Everything here is plain shared memory (no pointers, no virtuals) and
// untrusted: a member of the channel can write any bytes into it. Every
// loop is bounded, every index masked, so scribbled bytes make calls fail
// ("damaged") or misdeliver messages of that port, never read or write
// outside the ring's bytes, never hang past the caller's timeout.
//
// PortRing is a per-process view of those bytes; it owns nothing. Thread
// safety: any number of threads and processes may call any method at once,
// each with a lane and a slot of its own.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "structd/shm/layout.h"
#include "structd/shm/move_lane.h"

namespace structd::shm {

// The fixed part of a ring, three cache lines: what never changes, the
// senders' side and the receivers' side (so senders and receivers do not
// write one line). Little-endian, naturally aligned; doc/ports.md.
struct PortRingHeader {
  // Line 0: set once by Format.
  uint32_t capacity;  // cells: a power of two, 2 to kMaxPortCapacity
  uint32_t reserved0;
  uint8_t pad0[56];
  // Line 1: senders.
  uint64_t tail;               // the next position to send into
  uint32_t published;          // +1 per message published: receivers sleep on it
  uint32_t receivers_waiting;  // receivers asleep (or about to sleep) on it
  uint8_t pad1[48];
  // Line 2: receivers.
  uint64_t head;             // the next position to receive from
  uint32_t freed;            // +1 per cell emptied: blocked senders sleep on it
  uint32_t senders_waiting;  // threads asleep (or about to sleep) on it
  uint8_t pad2[48];
};
static_assert(sizeof(PortRingHeader) == 192);

// After the header: `seq`, capacity u64 words, then `ref`, capacity u64
// words (a message's reference: 0 unless the cell is full or moving). Cell
// i is (seq[i], ref[i]); `seq` says what it holds, for the position p it
// is for (p mod capacity is i):
//   seq == p                  free: position p may be sent into it
//   seq == p + 1              full: the message of position p is in `ref`
//   seq == kCellClaimed | L   a sender under lane L is filling it
//   seq == kCellTaking | L    a receiver under lane L is emptying it
// An emptied cell gets seq = p + capacity: free for the next lap. (Two
// arrays rather than pairs so that the references are an array<ref,N>
// of the port's built-in type, which the daemon's census, free path and
// inspection read like any ref field.)

inline constexpr uint64_t kCellClaimed = uint64_t{1} << 63;
inline constexpr uint64_t kCellTaking = uint64_t{1} << 62;
// Positions stay below the marks: 2^62 messages is 146 years at 10^9/s.
inline constexpr uint64_t kMaxPortPosition = (uint64_t{1} << 62) - 1;
inline constexpr uint32_t kMaxPortCapacity = uint32_t{1} << 20;

// How a blocking call waits: first `spin` looks (a pause between each),
// then a futex sleep until woken or `timeout`. A timeout <= 0 tries once.
struct PortWait {
  std::chrono::nanoseconds timeout{0};
  uint32_t spin = 0;
};

class PortRing {
 public:
  // A capacity a ring may have: a power of two from 2 to kMaxPortCapacity.
  static bool ValidCapacity(uint32_t capacity);
  // The bytes a ring of `capacity` cells takes.
  static size_t BytesFor(uint32_t capacity);
  // The ring as the fields of a built-in type (the daemon registers it
  // per capacity, key PortTypeKey): the header's words by name, then
  // array<u64,N> "seq" and array<ref,N> "ref". Its layout places every
  // field where this class reads it (LayoutMatchesTheRing, in the tests).
  static std::vector<FieldSpec> LayoutFields(uint32_t capacity);
  static std::string PortTypeKey(uint32_t capacity);
  // Makes `bytes` at `mem` an empty ring (positions start at 0).
  // InvalidArgument for a capacity that is not a power of two in
  // [2, kMaxPortCapacity] or does not fit. REQUIRES: nobody uses it yet,
  // `mem` 64-byte aligned.
  static absl::Status Format(void* mem, size_t bytes, uint32_t capacity);
  // A view of a ring formatted in `bytes` at `mem`: DataLoss if its
  // capacity (shared memory: untrusted) is not a power of two or does not
  // fit in `bytes`. The capacity is read once, here.
  static absl::StatusOr<PortRing> Attach(void* mem, size_t bytes);

  uint32_t capacity() const { return mask_ + 1; }
  // How long a Try call waits for a closed census gate (a census takes
  // milliseconds; it waits at most this long for a stopped mover).
  static constexpr std::chrono::seconds kGateWait{2};

  // Moves the reference in *ctx.slot into the ring. ResourceExhausted when
  // the ring is full (the slot is left as it was), InvalidArgument for an
  // empty slot, DataLoss if the ring's state is damaged. A closed gate is
  // waited out for up to kGateWait, then Unavailable (nothing moved); the
  // blocking calls wait for it within their timeout.
  absl::Status TrySend(const MoveContext& ctx);
  // TrySend that waits for room as `wait` says: DeadlineExceeded when the
  // ring is still full after the timeout.
  absl::Status Send(const MoveContext& ctx, PortWait wait);
  // Moves the oldest message into *ctx.slot (which must be 0). NotFound
  // when the ring has none ready (empty, or the next is still being sent
  // or taken), DataLoss if the ring's state is damaged.
  absl::Status TryReceive(const MoveContext& ctx);
  // TryReceive that waits for a message: DeadlineExceeded after the timeout.
  absl::Status Receive(const MoveContext& ctx, PortWait wait);

  // A receive in two steps, for a receiver that records the reference
  // somewhere the ring cannot see (the daemon: a session's ledger) between
  // taking it and emptying the cell. BeginReceive marks the oldest message
  // taken by ctx's lane and returns it (NotFound when none is ready; holes
  // are skipped); FinishReceive empties its cell. A receiver killed in
  // between is repaired as any: the cell is put back (RepairLane without a
  // slot), so the reference is then in the port *and* wherever the
  // receiver recorded it: one reference too many, never one too few.
  struct Taken {
    uint64_t position = 0;
    uint64_t ref = 0;
  };
  absl::StatusOr<Taken> BeginReceive(const MoveContext& ctx);
  void FinishReceive(const MoveContext& ctx, const Taken& taken);

  // A snapshot of the ring's counters (each read atomically, not together).
  struct Stats {
    uint32_t capacity = 0;
    uint64_t head = 0;  // messages received since creation
    uint64_t tail = 0;  // messages sent since creation
    uint32_t receivers_waiting = 0;
    uint32_t senders_waiting = 0;
    uint64_t depth() const { return tail > head ? tail - head : 0; }
  };
  Stats stats() const;

  // The event-loop hook. The word every publish changes; a FieldWatch of
  // it makes a descriptor readable when messages arrive (no thread per
  // port). Senders make the wake-up system call only while someone is
  // counted as waiting, so a watcher counts itself for as long as it
  // watches: AddPublishWatcher, then RemovePublishWatcher. While one is
  // counted, every send costs a FUTEX_WAKE (about a microsecond).
  uint32_t* published_word() const { return &header_->published; }
  void AddPublishWatcher();
  void RemovePublishWatcher();
  // The same for room: the word every emptied cell changes, and the count
  // its wakers look at (a sender waiting for room outside Send: the
  // client library's sends through the daemon).
  uint32_t* freed_word() const { return &header_->freed; }
  void AddRoomWatcher();
  void RemoveRoomWatcher();

  // --- For whoever repairs after a death (the daemon) -------------------

  // What RepairLane did.
  enum class Repair {
    kNothing,            // the lane touched no cell of this ring
    kSendCompleted,      // a claimed cell filled from the slot and published
    kReceiveRolledBack,  // a cell being taken made full again
    kReceiveCompleted,   // the reference was in the slot: the cell emptied
  };
  // Finishes or undoes the move of a lane whose process is gone: finds the
  // cell carrying `lane_id` (if any), and completes a send or rolls back a
  // receive as doc/design/ports.md says, from the cell's mark and `slot`
  // (the slot the lane's `op` names; null for a mover without one, the
  // daemon: a send is then completed with what the cell holds, a receive
  // put back). Wakes the ring's sleepers whatever it found.
  // REQUIRES: the lane's process has exited (nothing moves under it).
  Repair RepairLane(uint32_t lane_id, uint64_t* slot);
  // The reference in the cell that lane `lane_id` is filling or emptying
  // now (0 if none): what the census must not free while that lane is
  // busy (its mover alive but not done).
  uint64_t RefInFlight(uint32_t lane_id) const;
  // Moves head and tail past cells already emptied or claimed (a mover
  // killed between its cell and its cursor). Returns how many it moved.
  uint32_t HelpCursors();
  // Calls fn(ref) for each full cell: a message waiting to be received.
  // (A cell claimed or being taken has its reference counted in the
  // mover's slot, or, once the slot is cleared, by the lane's repair.)
  template <typename Fn>
  void ForEachMessage(Fn fn) const {
    for (uint32_t i = 0; i <= mask_; ++i) {
      const uint64_t seq = LoadSeq(i);
      if ((seq & (kCellClaimed | kCellTaking)) == 0 && (seq & mask_) == ((i + 1) & mask_)) {
        fn(LoadRef(i));
      }
    }
  }

 private:
  PortRing(PortRingHeader* header, uint64_t* seqs, uint64_t* refs, uint32_t mask)
      : header_(header), seqs_(seqs), refs_(refs), mask_(mask) {}
  // The two words of the cell for `position`.
  struct CellWords {
    uint64_t* seq;
    uint64_t* ref;
  };
  CellWords Cell(uint64_t position) const {
    const auto i = static_cast<uint32_t>(position & mask_);
    return {&seqs_[i], &refs_[i]};
  }
  uint64_t LoadSeq(uint32_t index) const;
  // The index of the cell whose mark is lane `lane_id`'s, its seq in *seq.
  std::optional<uint32_t> CellMarkedBy(uint32_t lane_id, uint64_t* seq) const;
  uint64_t LoadRef(uint32_t index) const;
  // One attempt, no wait. kBusy: the next cell is being taken by another
  // receiver (it frees the cell soon). kAborted: stopped for a test.
  // kGated: the census gate was closed, the lane backed out.
  enum class Attempt { kDone, kFull, kEmpty, kBusy, kDamaged, kAborted, kGated };
  Attempt SendOnce(const MoveContext& ctx);
  Attempt ReceiveOnce(const MoveContext& ctx);
  // SendOnce or ReceiveOnce for a Try call: a closed census gate is
  // waited out (up to kGateWait) and the attempt made once more.
  Attempt OnceThroughTheGate(bool sending, const MoveContext& ctx);
  // ReceiveOnce's halves: marks the oldest full cell taken by ctx's lane
  // (kDone, its position in *position; else the lane is cleared), and
  // empties a taken cell and moves `head` past it (false if a test stopped
  // it on the way).
  Attempt TakeOldest(const MoveContext& ctx, uint64_t* position);
  bool EmptyTaken(uint64_t position);
  // Send or Receive's loop: attempts, spins, sleeps until the deadline.
  absl::Status Waiting(bool sending, const MoveContext& ctx, PortWait wait);
  void WakeReceivers();
  void WakeSenders();

  PortRingHeader* header_;
  uint64_t* seqs_;
  uint64_t* refs_;
  uint32_t mask_;
};

namespace internal {
// Tests only: the next move on this thread stops after `step` (as if its
// process were killed there) and returns Aborted. 0: never.
//   send:    1 after the lane, 2 after the claim, 3 after tail, 4 after the
//            cell's ref, 5 after clearing the slot, 6 after publishing
//   receive: 1 after the lane, 2 after the claim, 3 after filling the slot,
//            4 after clearing the cell's ref, 5 after freeing the cell
void StopPortMoveAfterStepForTesting(int step);
}  // namespace internal

}  // namespace structd::shm

#endif  // STRUCTD_SHM_PORT_RING_H_
