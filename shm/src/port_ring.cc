#include "structd/shm/port_ring.h"

#include <atomic>
#include <bit>
#include <new>
#include <optional>

#include "absl/strings/str_format.h"
#include "futex.h"

namespace structd::shm {
namespace {

using internal::FutexDeadline;

// A bound on retries of one attempt: each retry means another mover made
// progress or a cursor lagged, so a correct ring never comes near it; a
// scribbled one (cursors and cells that never agree) stops here.
constexpr int kMaxRetries = 1 << 16;

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

std::atomic<int> g_stop_after_step{0};

// True if a test asked this move to stop after `step`: the move returns at
// once, leaving memory as a kill there would (the lane is left as is).
bool StopHere(int step) {
  int want = g_stop_after_step.load(std::memory_order_relaxed);
  if (want != step) return false;
  g_stop_after_step.store(0, std::memory_order_relaxed);
  return true;
}

void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

FutexDeadline DeadlineAfter(std::chrono::nanoseconds timeout) {
  const FutexDeadline now = std::chrono::steady_clock::now();
  if (timeout >= FutexDeadline::max() - now) return internal::kNoDeadline;
  return now + timeout;
}

// Sleeps until the census gate is open or `deadline`; false on timeout.
bool WaitGateOpen(uint32_t* gate, FutexDeadline deadline) {
  while (A(*gate).load(std::memory_order_seq_cst) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    internal::FutexWait(gate, 1, deadline);
  }
  return true;
}

absl::Status GateStuck() {
  return absl::UnavailableError(
      "the daemon is counting the channel's references (a census) and did not finish within "
      "the wait; try again");
}

// Ends a move: `ctx`'s lane idle again, `result` returned.
template <typename Result>
Result Done(const MoveContext& ctx, Result result) {
  CloseLane(ctx);
  return result;
}

// The position in `cursor` for the retry-th look, or nothing if the ring
// is damaged: a position past the marks, or no progress after kMaxRetries.
std::optional<uint64_t> CursorFor(uint64_t& cursor, int retry) {
  if (retry == kMaxRetries) return std::nullopt;
  const uint64_t p = A(cursor).load(std::memory_order_acquire);
  if (p > kMaxPortPosition) return std::nullopt;
  return p;
}

bool Marked(uint64_t seq) { return (seq & (kCellClaimed | kCellTaking)) != 0; }

// Whether a cell whose seq reads `seq` is done with position p: its
// message was taken and the cell emptied, and it may already be free or
// full for a later lap (a sender claims a free cell without looking at
// `head`, so the cell can run ahead of a `head` or `tail` that lags).
bool EmptiedFor(uint64_t seq, uint64_t p, uint64_t capacity) {
  return !Marked(seq) && seq >= p + capacity;
}

}  // namespace

namespace internal {
void StopPortMoveAfterStepForTesting(int step) {
  g_stop_after_step.store(step, std::memory_order_relaxed);
}
}  // namespace internal

bool PortRing::ValidCapacity(uint32_t capacity) {
  return capacity >= 2 && capacity <= kMaxPortCapacity && std::has_single_bit(capacity);
}

size_t PortRing::BytesFor(uint32_t capacity) {
  return sizeof(PortRingHeader) + size_t{capacity} * 2 * sizeof(uint64_t);
}

std::vector<FieldSpec> PortRing::LayoutFields(uint32_t capacity) {
  return {
      FieldSpec::Scalar("capacity", FieldKind::kU32),
      FieldSpec::Scalar("reserved0", FieldKind::kU32),
      FieldSpec::Array("pad0", FieldKind::kU8, 56),
      FieldSpec::Scalar("tail", FieldKind::kU64),
      FieldSpec::Scalar("published", FieldKind::kU32),
      FieldSpec::Scalar("receivers_waiting", FieldKind::kU32),
      FieldSpec::Array("pad1", FieldKind::kU8, 48),
      FieldSpec::Scalar("head", FieldKind::kU64),
      FieldSpec::Scalar("freed", FieldKind::kU32),
      FieldSpec::Scalar("senders_waiting", FieldKind::kU32),
      FieldSpec::Array("pad2", FieldKind::kU8, 48),
      FieldSpec::Array("seq", FieldKind::kU64, capacity),
      FieldSpec::Array("ref", FieldKind::kRef, capacity),
  };
}

std::string PortRing::PortTypeKey(uint32_t capacity) {
  return absl::StrFormat("structd.port/%u", capacity);
}

absl::Status PortRing::Format(void* mem, size_t bytes, uint32_t capacity) {
  if (!ValidCapacity(capacity)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "port capacity %u: must be a power of two from 2 to %u", capacity, kMaxPortCapacity));
  }
  if (BytesFor(capacity) > bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a port of %u cells takes %u bytes; %u given", capacity, BytesFor(capacity), bytes));
  }
  auto* header = new (mem) PortRingHeader{};
  header->capacity = capacity;
  auto* seqs = reinterpret_cast<uint64_t*>(header + 1);
  for (uint32_t i = 0; i < capacity; ++i) {
    seqs[i] = i;
    seqs[capacity + i] = 0;  // refs
  }
  return absl::OkStatus();
}

absl::StatusOr<PortRing> PortRing::Attach(void* mem, size_t bytes) {
  auto* header = static_cast<PortRingHeader*>(mem);
  if (bytes < sizeof(PortRingHeader)) {
    return absl::DataLossError(absl::StrFormat("%u bytes cannot hold a port", bytes));
  }
  const uint32_t capacity = A(header->capacity).load(std::memory_order_relaxed);
  if (!ValidCapacity(capacity) || BytesFor(capacity) > bytes) {
    return absl::DataLossError(absl::StrFormat(
        "the port's capacity word says %u, which is not a power of two that fits its %u "
        "bytes: a member overwrote the port",
        capacity, bytes));
  }
  auto* seqs = reinterpret_cast<uint64_t*>(header + 1);
  return PortRing(header, seqs, seqs + capacity, capacity - 1);
}

uint64_t PortRing::LoadSeq(uint32_t index) const {
  return A(seqs_[index & mask_]).load(std::memory_order_acquire);
}

uint64_t PortRing::LoadRef(uint32_t index) const {
  return A(refs_[index & mask_]).load(std::memory_order_relaxed);
}

PortRing::Stats PortRing::stats() const {
  Stats s;
  s.capacity = capacity();
  s.head = A(header_->head).load(std::memory_order_relaxed);
  s.tail = A(header_->tail).load(std::memory_order_relaxed);
  s.receivers_waiting = A(header_->receivers_waiting).load(std::memory_order_relaxed);
  s.senders_waiting = A(header_->senders_waiting).load(std::memory_order_relaxed);
  return s;
}

void PortRing::AddPublishWatcher() {
  A(header_->receivers_waiting).fetch_add(1, std::memory_order_seq_cst);
}

void PortRing::RemovePublishWatcher() {
  A(header_->receivers_waiting).fetch_sub(1, std::memory_order_seq_cst);
}

void PortRing::AddRoomWatcher() {
  A(header_->senders_waiting).fetch_add(1, std::memory_order_seq_cst);
}

void PortRing::RemoveRoomWatcher() {
  A(header_->senders_waiting).fetch_sub(1, std::memory_order_seq_cst);
}

void PortRing::WakeReceivers() {
  // Dekker with the sleeper (Receive): it counts itself, then looks at
  // `published`; we change `published`, then look at the count. Both
  // sequentially consistent, so one of us sees the other.
  A(header_->published).fetch_add(1, std::memory_order_seq_cst);
  if (A(header_->receivers_waiting).load(std::memory_order_seq_cst) != 0) {
    internal::FutexWake(&header_->published, 1);
  }
}

void PortRing::WakeSenders() {
  A(header_->freed).fetch_add(1, std::memory_order_seq_cst);
  // Everyone: senders waiting for room and receivers waiting for a cell
  // another receiver was taking sleep on the same word.
  if (A(header_->senders_waiting).load(std::memory_order_seq_cst) != 0) {
    internal::FutexWake(&header_->freed, INT32_MAX);
  }
}

PortRing::Attempt PortRing::SendOnce(const MoveContext& ctx) {
  const uint64_t ref = A(*ctx.slot).load(std::memory_order_relaxed);
  const uint64_t capacity = uint64_t{mask_} + 1;
  if (!OpenLane(ctx, MoveKind::kSend)) return Attempt::kGated;
  if (StopHere(1)) return Attempt::kAborted;
  uint64_t p = 0;
  CellWords cell{};
  for (int retry = 0;; ++retry) {
    std::optional<uint64_t> at = CursorFor(header_->tail, retry);
    if (!at) return Done(ctx, Attempt::kDamaged);
    p = *at;
    cell = Cell(p);
    uint64_t seq = A(*cell.seq).load(std::memory_order_acquire);
    if (seq == p) {
      if (A(*cell.seq).compare_exchange_strong(seq, kCellClaimed | ctx.lane_id,
                                               std::memory_order_acq_rel)) {
        break;
      }
      continue;
    }
    if (seq + capacity == p + 1) {  // the message of p - capacity: full
      return Done(ctx, Attempt::kFull);
    }
    const uint64_t head = A(header_->head).load(std::memory_order_acquire);
    if (head > p) continue;  // our tail was stale
    if (p - head >= capacity) {
      // The cell may still be p - capacity's (being taken): full for now.
      return Done(ctx, Attempt::kFull);
    }
    // Head is past p - capacity, so that position's cell was emptied
    // (seq = p) before head moved: what the cell holds *now* is p's
    // (claimed, published or taken by others while `tail` lagged). The
    // value read before `head` may still have been p - capacity's.
    seq = A(*cell.seq).load(std::memory_order_acquire);
    if (seq == p) continue;
    // Claimed, full or emptied for p (maybe a lap ahead already: this
    // sender was preempted while the ring went round): p was sent into.
    if (Marked(seq) || seq == p + 1 || EmptiedFor(seq, p, capacity)) {
      A(header_->tail).compare_exchange_strong(p, p + 1, std::memory_order_acq_rel);
      continue;
    }
    return Done(ctx, Attempt::kDamaged);
  }
  if (StopHere(2)) return Attempt::kAborted;
  uint64_t expected = p;
  A(header_->tail).compare_exchange_strong(expected, p + 1, std::memory_order_acq_rel);
  if (StopHere(3)) return Attempt::kAborted;
  // The reference is in the slot and then the cell: a repair after a kill
  // between the two stores finds it in both and counts it once (the cell
  // is claimed by this lane).
  A(*cell.ref).store(ref, std::memory_order_relaxed);
  if (StopHere(4)) return Attempt::kAborted;
  A(*ctx.slot).store(0, std::memory_order_relaxed);
  if (StopHere(5)) return Attempt::kAborted;
  A(*cell.seq).store(p + 1, std::memory_order_release);
  if (StopHere(6)) return Attempt::kAborted;
  WakeReceivers();
  return Done(ctx, Attempt::kDone);
}

PortRing::Attempt PortRing::TakeOldest(const MoveContext& ctx, uint64_t* position) {
  const uint64_t capacity = uint64_t{mask_} + 1;
  if (!OpenLane(ctx, MoveKind::kReceive)) return Attempt::kGated;
  if (StopHere(1)) return Attempt::kAborted;
  for (int retry = 0;; ++retry) {
    std::optional<uint64_t> at = CursorFor(header_->head, retry);
    if (!at) return Done(ctx, Attempt::kDamaged);
    uint64_t p = *at;
    const CellWords cell = Cell(p);
    uint64_t seq = A(*cell.seq).load(std::memory_order_acquire);
    if (seq == p + 1) {
      // Not taken yet, so `head` (which moves only past emptied cells) is
      // still p: the cell is the oldest message.
      if (A(*cell.seq).compare_exchange_strong(seq, kCellTaking | ctx.lane_id,
                                               std::memory_order_acq_rel)) {
        *position = p;
        return Attempt::kDone;
      }
      continue;
    }
    if (EmptiedFor(seq, p, capacity)) {
      // The receiver that emptied it has not moved `head` yet: help it on.
      A(header_->head).compare_exchange_strong(p, p + 1, std::memory_order_acq_rel);
      continue;
    }
    if (seq == p || (seq & kCellClaimed) != 0 || (seq & kCellTaking) != 0) {
      // Nothing sent into p yet, or being sent, or being taken by another
      // receiver: unless `head` moved meanwhile (then the cell may be the
      // next lap's), nothing is ready.
      if (A(header_->head).load(std::memory_order_acquire) != p) continue;
      return Done(ctx, (seq & kCellTaking) != 0 ? Attempt::kBusy : Attempt::kEmpty);
    }
    if (A(header_->head).load(std::memory_order_acquire) != p) continue;
    return Done(ctx, Attempt::kDamaged);
  }
}

bool PortRing::EmptyTaken(uint64_t position) {
  const CellWords cell = Cell(position);
  A(*cell.ref).store(0, std::memory_order_relaxed);
  if (StopHere(4)) return false;
  A(*cell.seq).store(position + mask_ + 1, std::memory_order_release);
  if (StopHere(5)) return false;
  uint64_t expected = position;
  A(header_->head).compare_exchange_strong(expected, position + 1, std::memory_order_acq_rel);
  WakeSenders();
  return true;
}

PortRing::Attempt PortRing::ReceiveOnce(const MoveContext& ctx) {
  // A full cell without a reference is a hole (a send completed by a
  // repair that never had the reference): emptied and skipped. At most a
  // lap of them, or the ring is damaged.
  for (uint32_t holes = 0; holes <= mask_; ++holes) {
    uint64_t p = 0;
    if (Attempt a = TakeOldest(ctx, &p); a != Attempt::kDone) return a;
    if (StopHere(2)) return Attempt::kAborted;
    // Into the slot, then out of the cell: a repair after a kill between
    // the two finds the slot filled and completes the receive.
    const uint64_t ref = A(*Cell(p).ref).load(std::memory_order_relaxed);
    // Release: the slot's mark, reset by the client before this receive,
    // is seen reset by whoever sees the reference (the daemon's Release).
    A(*ctx.slot).store(ref, std::memory_order_release);
    if (StopHere(3)) return Attempt::kAborted;
    if (!EmptyTaken(p)) return Attempt::kAborted;
    if (ref != 0) return Done(ctx, Attempt::kDone);
  }
  return Done(ctx, Attempt::kDamaged);
}

absl::StatusOr<PortRing::Taken> PortRing::BeginReceive(const MoveContext& ctx) {
  for (uint32_t holes = 0; holes <= mask_; ++holes) {
    Taken taken;
    switch (TakeOldest(ctx, &taken.position)) {
      case Attempt::kDone:
        break;
      case Attempt::kEmpty:
      case Attempt::kBusy:
      case Attempt::kFull:
        return absl::NotFoundError("the port has no message ready");
      case Attempt::kGated:
        return GateStuck();
      case Attempt::kAborted:
        return absl::AbortedError("stopped inside the move for a test");
      case Attempt::kDamaged:
        return absl::DataLossError("receive: the port's state is inconsistent");
    }
    taken.ref = A(*Cell(taken.position).ref).load(std::memory_order_relaxed);
    if (taken.ref != 0) return taken;
    EmptyTaken(taken.position);  // a hole
  }
  return Done(ctx, absl::DataLossError("receive: a lap of holes"));
}

void PortRing::FinishReceive(const MoveContext& ctx, const Taken& taken) {
  EmptyTaken(taken.position);
  Done(ctx, 0);
}

namespace {

absl::Status Aborted() {
  return absl::AbortedError("stopped inside the move for a test");
}

absl::Status Damaged(std::string_view what) {
  return absl::DataLossError(absl::StrFormat(
      "%s: the port's state is inconsistent (a member of the channel overwrote its memory); "
      "the daemon repairs what it can, 'structctl check' reports it",
      what));
}

}  // namespace

PortRing::Attempt PortRing::OnceThroughTheGate(bool sending, const MoveContext& ctx) {
  const Attempt attempt = sending ? SendOnce(ctx) : ReceiveOnce(ctx);
  if (attempt != Attempt::kGated || !WaitGateOpen(ctx.gate, DeadlineAfter(kGateWait))) {
    return attempt;
  }
  return sending ? SendOnce(ctx) : ReceiveOnce(ctx);
}

absl::Status PortRing::TrySend(const MoveContext& ctx) {
  if (A(*ctx.slot).load(std::memory_order_relaxed) == 0) {
    return absl::InvalidArgumentError("send: the slot holds no reference");
  }
  switch (OnceThroughTheGate(/*sending=*/true, ctx)) {
    case Attempt::kGated:
      return GateStuck();
    case Attempt::kDone:
      return absl::OkStatus();
    case Attempt::kFull:
    case Attempt::kBusy:
    case Attempt::kEmpty:
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the port is full (%u messages); receive from it, or send with a timeout to wait "
          "for room",
          capacity()));
    case Attempt::kAborted:
      return Aborted();
    case Attempt::kDamaged:
      break;
  }
  return Damaged("send");
}

absl::Status PortRing::TryReceive(const MoveContext& ctx) {
  if (A(*ctx.slot).load(std::memory_order_relaxed) != 0) {
    return absl::InvalidArgumentError("receive: the slot is not free");
  }
  switch (OnceThroughTheGate(/*sending=*/false, ctx)) {
    case Attempt::kGated:
      return GateStuck();
    case Attempt::kDone:
      return absl::OkStatus();
    case Attempt::kEmpty:
    case Attempt::kBusy:
    case Attempt::kFull:
      return absl::NotFoundError("the port has no message ready");
    case Attempt::kAborted:
      return Aborted();
    case Attempt::kDamaged:
      break;
  }
  return Damaged("receive");
}

namespace {

// One sleep of a blocking call, on `word` while it still holds `seen`,
// counted in `waiters` so that wakers know to make the system call.
void SleepOn(uint32_t& word, uint32_t seen, uint32_t& waiters, FutexDeadline deadline) {
  A(waiters).fetch_add(1, std::memory_order_seq_cst);
  if (A(word).load(std::memory_order_seq_cst) == seen) {
    internal::FutexWait(&word, seen, deadline);
  }
  A(waiters).fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace

absl::Status PortRing::Send(const MoveContext& ctx, PortWait wait) {
  if (wait.timeout <= std::chrono::nanoseconds::zero()) return TrySend(ctx);
  if (A(*ctx.slot).load(std::memory_order_relaxed) == 0) {
    return absl::InvalidArgumentError("send: the slot holds no reference");
  }
  return Waiting(/*sending=*/true, ctx, wait);
}

absl::Status PortRing::Receive(const MoveContext& ctx, PortWait wait) {
  if (wait.timeout <= std::chrono::nanoseconds::zero()) return TryReceive(ctx);
  if (A(*ctx.slot).load(std::memory_order_relaxed) != 0) {
    return absl::InvalidArgumentError("receive: the slot is not free");
  }
  return Waiting(/*sending=*/false, ctx, wait);
}

absl::Status PortRing::Waiting(bool sending, const MoveContext& ctx, PortWait wait) {
  const FutexDeadline deadline = DeadlineAfter(wait.timeout);
  uint32_t spin = wait.spin;
  for (;;) {
    // Read before the attempt: a publish or a free after it changes them.
    const uint32_t published = A(header_->published).load(std::memory_order_seq_cst);
    const uint32_t freed = A(header_->freed).load(std::memory_order_seq_cst);
    const Attempt attempt = sending ? SendOnce(ctx) : ReceiveOnce(ctx);
    switch (attempt) {
      case Attempt::kDone:
        return absl::OkStatus();
      case Attempt::kAborted:
        return Aborted();
      case Attempt::kDamaged:
        return Damaged(sending ? "send" : "receive");
      case Attempt::kGated:
        if (!WaitGateOpen(ctx.gate, deadline)) return GateStuck();
        continue;
      default:
        break;
    }
    if (spin > 0) {
      --spin;
      Pause();
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      if (!sending) {
        return absl::DeadlineExceededError("no message arrived in the port within the timeout");
      }
      return absl::DeadlineExceededError(absl::StrFormat(
          "the port stayed full (%u messages) for the whole timeout; receivers are not "
          "keeping up",
          capacity()));
    }
    if (sending || attempt == Attempt::kBusy) {
      // Waiting for a cell to be emptied: for room, or for another
      // receiver to finish taking the next message.
      SleepOn(header_->freed, freed, header_->senders_waiting, deadline);
    } else {
      SleepOn(header_->published, published, header_->receivers_waiting, deadline);
    }
  }
}

uint32_t PortRing::HelpCursors() {
  const uint64_t capacity = uint64_t{mask_} + 1;
  uint32_t moved = 0;
  for (uint64_t i = 0; i <= capacity; ++i) {
    uint64_t head = A(header_->head).load(std::memory_order_acquire);
    if (head > kMaxPortPosition || !EmptiedFor(LoadSeq(head & mask_), head, capacity)) break;
    if (A(header_->head).compare_exchange_strong(head, head + 1, std::memory_order_acq_rel)) {
      ++moved;
    }
  }
  for (uint64_t i = 0; i <= capacity; ++i) {
    uint64_t tail = A(header_->tail).load(std::memory_order_acquire);
    const uint64_t head = A(header_->head).load(std::memory_order_acquire);
    if (tail > kMaxPortPosition || head > tail || tail - head >= capacity) break;
    // After `head` (see SendOnce): the cell's state for position `tail`.
    const uint64_t seq = LoadSeq(tail & mask_);
    if (!Marked(seq) && seq != tail + 1 && seq != tail + capacity) break;
    if (A(header_->tail).compare_exchange_strong(tail, tail + 1, std::memory_order_acq_rel)) {
      ++moved;
    }
  }
  return moved;
}

std::optional<uint32_t> PortRing::CellMarkedBy(uint32_t lane_id, uint64_t* seq) const {
  for (uint32_t i = 0; i <= mask_; ++i) {
    *seq = LoadSeq(i);
    if (*seq == (kCellClaimed | lane_id) || *seq == (kCellTaking | lane_id)) return i;
  }
  return std::nullopt;
}

uint64_t PortRing::RefInFlight(uint32_t lane_id) const {
  uint64_t seq = 0;
  const std::optional<uint32_t> marked = CellMarkedBy(lane_id, &seq);
  return marked ? LoadRef(*marked) : 0;
}

PortRing::Repair PortRing::RepairLane(uint32_t lane_id, uint64_t* slot) {
  // The cell's mark says which move it was (a send or a receive).
  const uint64_t capacity = uint64_t{mask_} + 1;
  uint64_t seq = 0;
  const std::optional<uint32_t> marked = CellMarkedBy(lane_id, &seq);
  Repair result = Repair::kNothing;
  if (marked) {
    const uint32_t index = *marked;
    // Cursors past what others finished, so that the cell's position is
    // the one in [head, head + capacity) with its index.
    HelpCursors();
    const uint64_t head = A(header_->head).load(std::memory_order_acquire);
    const uint64_t p = head + ((index - head) & mask_);
    const CellWords cell = Cell(index);
    const uint64_t in_slot = slot == nullptr ? 0 : A(*slot).load(std::memory_order_relaxed);
    if ((seq & kCellClaimed) != 0) {
      // A send completes forward: the position is taken and receivers
      // wait on it. The reference is in the cell, or still in the slot.
      if (A(*cell.ref).load(std::memory_order_relaxed) == 0) {
        A(*cell.ref).store(in_slot, std::memory_order_relaxed);
      }
      if (slot != nullptr) A(*slot).store(0, std::memory_order_relaxed);
      A(*cell.seq).store(p + 1, std::memory_order_release);
      result = Repair::kSendCompleted;
    } else if (in_slot == 0) {
      // A receive that had not reached the slot: the message goes back.
      A(*cell.seq).store(p + 1, std::memory_order_release);
      result = Repair::kReceiveRolledBack;
    } else {
      // Received: the reference is the dead receiver's now.
      A(*cell.ref).store(0, std::memory_order_relaxed);
      A(*cell.seq).store(p + capacity, std::memory_order_release);
      result = Repair::kReceiveCompleted;
    }
  }
  HelpCursors();
  // A mover killed after publishing (or freeing) but before waking
  // leaves sleepers behind: wake them whatever was found.
  WakeReceivers();
  WakeSenders();
  return result;
}

}  // namespace structd::shm
