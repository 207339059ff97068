// Channel: session records (shm/session_record.h; doc/ports.md, "Moves in
// shared memory"). A record is an instance of the built-in type
// SessionRecord::TypeKey(), allocated for a session on its first
// OpenRecord; its ref and tag are kept in the session's ledger file (the
// daemon's private state: a member cannot make the daemon take another
// instance for a record). The daemon counts what its slots hold (census),
// closes its gate while it counts, takes references from its marked slots
// for Release, and at the session's end finishes or undoes its lanes'
// moves and releases what its slots hold.
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/channel.h"
#include "spdlog/spdlog.h"

namespace structd::server {
namespace {

// How long the census waits for lanes in flight before it counts around
// them (a mover stopped in a debugger, or scribbled lanes).
constexpr std::chrono::milliseconds kLaneWait{100};

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

}  // namespace

absl::StatusOr<shm::SessionRecord> Channel::RecordViewLocked(shm::Ref ref) const {
  absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
  if (!inst.ok()) return inst.status();
  const RegisteredType* type = registry_.FindByIndex(inst->type_index());
  if (type == nullptr || type->key != shm::SessionRecord::TypeKey()) {
    return absl::DataLossError(absl::StrCat(ref.ToString(), " is not a session record"));
  }
  if (!inst->Fits(type->layout.size())) {
    return absl::DataLossError(absl::StrCat(ref.ToString(), ": block smaller than a record"));
  }
  return shm::SessionRecord::Attach(inst->payload(), type->layout.size());
}

absl::StatusOr<Channel::RecordInfo> Channel::OpenRecord(const std::string& session_id) {
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
  if (!ledger.ok()) return ledger.status();
  if (const shm::Ref held = (*ledger)->record(); !held.is_null()) {
    if (RecordViewLocked(held).ok()) return RecordInfo{held, (*ledger)->record_tag()};
    spdlog::warn("channel '{}': the record {} of session {} was freed or overwritten by a "
                 "member; allocating another",
                 name_, held.ToString(), session_id.substr(0, 8));
  }
  if (next_record_tag_ > shm::kMaxRecordTag) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': %u session records were made since the daemon started, the most its "
        "lane ids can tell apart; restart the daemon (tags start again after the live ones)",
        name_, shm::kMaxRecordTag));
  }
  const uint32_t tag = next_record_tag_;
  absl::StatusOr<shm::Ref> ref = AllocateBuiltinLocked(
      shm::SessionRecord::TypeKey(), shm::SessionRecord::LayoutFields(), "session record",
      [&](void* payload, size_t bytes) { return shm::SessionRecord::Format(payload, bytes, tag); });
  if (!ref.ok()) return ref.status();
  ++next_record_tag_;
  // The allocation's reference becomes the session's hold on its record.
  // A daemon killed before this store leaves an instance nothing counts:
  // the census frees it.
  (*ledger)->SetRecord(*ref, tag);
  return RecordInfo{*ref, tag};
}

std::vector<HeldRecord> Channel::RecordsLocked() const {
  std::vector<HeldRecord> out;
  auto add = [&](const std::string& session, shm::Ref ref, uint32_t tag) {
    absl::StatusOr<shm::SessionRecord> view = RecordViewLocked(ref);
    if (!view.ok()) {
      spdlog::warn("channel '{}': record {} of session {}: {}", name_, ref.ToString(),
                   session.empty() ? "(ended)" : session.substr(0, 8),
                   std::string(view.status().message()));
      return;
    }
    out.push_back(HeldRecord{session, ref, tag, *view});
  };
  for (const auto& [session, ledger] : ledgers_) {
    if (!ledger->record().is_null()) add(session, ledger->record(), ledger->record_tag());
  }
  for (const LeftRecord& left : left_records_) add("", left.record.ref, left.record.tag);
  return out;
}

Channel::GatedCensus Channel::TakeGatedCensusLocked() const {
  const std::vector<HeldRecord> records = RecordsLocked();
  for (const HeldRecord& r : records) r.view.CloseGate();
  // Moves that wrote their lane before the gate closed finish in
  // nanoseconds; those after it back out. Wait for the first kind.
  const auto deadline = std::chrono::steady_clock::now() + kLaneWait;
  auto any_busy = [&] {
    for (const HeldRecord& r : records) {
      for (uint32_t i = 0; i < shm::kRecordLanes; ++i) {
        if (r.view.LaneBusy(i)) return true;
      }
    }
    return false;
  };
  while (any_busy() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  GatedCensus out;
  // Lanes still busy: their mover is stopped (or gone, or the lane was
  // scribbled). What they name may be counted once, twice or not at all:
  // kept from being lowered or freed.
  for (const HeldRecord& r : records) {
    for (uint32_t i = 0; i < shm::kRecordLanes; ++i) {
      if (!r.view.LaneBusy(i)) continue;
      shm::MoveLane* lane = r.view.lane(i);
      const uint64_t op = A(lane->op).load(std::memory_order_acquire);
      const uint64_t in_slot =
          A(*r.view.slot(shm::MoveSlotOf(op))).load(std::memory_order_acquire);
      if (in_slot != 0) out.in_flight.insert(Census::Block(shm::Ref::FromBits(in_slot)));
      const shm::Ref port = shm::Ref::FromBits(A(lane->port).load(std::memory_order_acquire));
      if (shm::ChangesACount(shm::MoveKindOf(op))) {
        // A retain's instance, or a store's holder: its count may be
        // raised with nothing naming it yet; a store's old value, named
        // by the lane alone.
        if (!port.is_null()) out.in_flight.insert(Census::Block(port));
        const uint64_t spare = A(lane->spare).load(std::memory_order_acquire);
        if (shm::MoveKindOf(op) == shm::MoveKind::kStore && spare != 0) {
          out.in_flight.insert(Census::Block(shm::Ref::FromBits(spare)));
        }
      } else if (absl::StatusOr<shm::InstancePtr> p = arena_->Resolve(port); p.ok()) {
        if (absl::StatusOr<shm::PortRing> ring = RingOfLocked(*p); ring.ok()) {
          const uint64_t cell = ring->RefInFlight(shm::SessionRecord::LaneId(r.tag, i));
          if (cell != 0) out.in_flight.insert(Census::Block(shm::Ref::FromBits(cell)));
        }
      }
      spdlog::warn("channel '{}': census: lane {} of session {}'s record is still moving a "
                   "reference after {} ms (a stopped process?); what it names is kept as is",
                   name_, i, r.session.empty() ? "(ended)" : r.session.substr(0, 8),
                   kLaneWait.count());
    }
  }
  // Blocks an ended session's live process may be recycling in place
  // (refcount 0 while nothing counts them any more): not freed under it.
  for (const LeftClaim& c : left_claims_) out.in_flight.insert(Census::Block(c.ref));
  out.census = TakeCensus(*arena_, registry_, roots_, ledgers_, records);
  out.gated = records;
  return out;
}

void Channel::OpenGatesLocked(const GatedCensus& gated) const {
  for (const HeldRecord& r : gated.gated) r.view.OpenGate();
}

uint64_t Channel::EndRecordLocked(const HeldRecord& record, const SessionProcess& process) {
  const shm::SessionRecord& view = record.view;
  bool busy = false;
  for (uint32_t i = 0; i < shm::kRecordLanes && !busy; ++i) busy = view.LaneBusy(i);
  if (busy && !process.Exited()) {
    spdlog::info("channel '{}': a session ended with a move in flight in its record {}: "
                 "ended once its process has exited",
                 name_, record.ref.ToString());
    left_records_.push_back({record, process});
    return 0;
  }
  // Every lane's move finished or undone (ports.md's tables), against
  // the port its lane names, if that is a port. What a member scribbled
  // is counted and logged once, not per word.
  uint32_t bad_lanes = 0;
  uint32_t bad_slots = 0;
  uint32_t counting_lanes = 0;
  for (uint32_t i = 0; i < shm::kRecordLanes; ++i) {
    shm::MoveLane* lane = view.lane(i);
    const uint64_t op = A(lane->op).load(std::memory_order_acquire);
    if (op == 0) continue;
    if (shm::ChangesACount(shm::MoveKindOf(op))) {
      // A retain or a store (shm/local_retain.h, local_store.h): a count
      // raised or not, a reference named twice or not at all: the recount
      // below settles it.
      ++counting_lanes;
      A(lane->op).store(0, std::memory_order_release);
      continue;
    }
    const shm::Ref port = shm::Ref::FromBits(A(lane->port).load(std::memory_order_acquire));
    absl::StatusOr<shm::InstancePtr> p = arena_->Resolve(port);
    absl::StatusOr<shm::PortRing> ring =
        p.ok() ? RingOfLocked(*p) : absl::StatusOr<shm::PortRing>(p.status());
    if (ring.ok()) {
      ring->RepairLane(shm::SessionRecord::LaneId(record.tag, i), view.slot(shm::MoveSlotOf(op)));
    } else {
      ++bad_lanes;
    }
    A(lane->op).store(0, std::memory_order_release);
  }
  if (counting_lanes != 0) {
    // Counted as an ended session's record while the census runs, so
    // that its slots are counted; then released as usual.
    left_records_.push_back({record, process});
    const RepairReport repaired = ReconcileLocked();
    left_records_.pop_back();
    spdlog::warn("channel '{}': a session ended with {} retain(s) or store(s) in flight in its "
                 "record {}: recounted ({} refcount(s) set, {} instance(s) freed)",
                 name_, counting_lanes, record.ref.ToString(), repaired.refcounts_fixed,
                 repaired.leaked_freed);
  }
  uint64_t released = 0;
  for (uint32_t i = 0; i < shm::kRecordSlots; ++i) {
    const uint64_t held = A(*view.slot(i)).exchange(0, std::memory_order_acq_rel);
    if (held == 0) continue;
    // A slot names a block, as a ledger entry does (a spare of the stock
    // the process recycled in place: shm/local_recycle.h).
    if (!arena_->ResolveCurrent(shm::Ref::FromBits(held)).ok()) {
      ++bad_slots;
      continue;
    }
    released += ReleaseEndedHoldingLocked(shm::Ref::FromBits(held), 1, record.session, process);
  }
  if (bad_lanes + bad_slots != 0) {
    spdlog::warn("channel '{}': the record {} of an ended session had {} lane(s) naming no "
                 "port and {} slot(s) naming no live instance (a member wrote them); left to "
                 "the census of the next start",
                 name_, record.ref.ToString(), bad_lanes, bad_slots);
  }
  absl::StatusOr<shm::ReleaseResult> freed = allocator_->Release(record.ref, TypesLocked());
  LogIfFailed(freed.status(), "releasing an ended session's record");
  return released + (freed.ok() ? 1 : 0);
}

std::vector<Channel::SlotTake> Channel::PlanMarkedSlotsLocked(
    const Ledger& ledger, const std::vector<shm::Ref>& refs) const {
  std::vector<SlotTake> plan;
  if (ledger.record().is_null()) return plan;
  absl::StatusOr<shm::SessionRecord> view = RecordViewLocked(ledger.record());
  if (!view.ok()) return plan;
  // Marked slots by the ref they hold. The client leaves a marked slot
  // alone until it reads 0 again, so this stays true under the lock.
  std::multimap<uint64_t, uint32_t> marked;
  for (uint32_t i = 0; i < shm::kRecordSlots; ++i) {
    const uint64_t held = A(*view->slot(i)).load(std::memory_order_acquire);
    if (held != 0 && A(*view->mark(i)).load(std::memory_order_acquire) != 0) {
      marked.emplace(held, i);
    }
  }
  for (size_t i = 0; i < refs.size() && !marked.empty(); ++i) {
    auto it = marked.find(refs[i].bits());
    if (it == marked.end()) continue;
    plan.push_back({it->second, i, refs[i]});
    marked.erase(it);
  }
  return plan;
}

std::vector<shm::Ref> Channel::TakeMarkedSlotsLocked(const Ledger& ledger,
                                                     const std::vector<SlotTake>& plan) {
  std::vector<shm::Ref> taken;
  if (plan.empty()) return taken;
  absl::StatusOr<shm::SessionRecord> view = RecordViewLocked(ledger.record());
  if (!view.ok()) return taken;
  for (const SlotTake& t : plan) {
    // Out of the slot first: a daemon killed before the release leaves
    // one count too many, which the census lowers; never one too few.
    uint64_t expected = t.ref.bits();
    if (A(*view->slot(t.slot)).compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
      taken.push_back(t.ref);
    } else {
      spdlog::warn("channel '{}': slot {} changed under a release (a member wrote it)", name_,
                   t.slot);
    }
  }
  return taken;
}

}  // namespace structd::server
