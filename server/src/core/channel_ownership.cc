// Channel: the ownership transactions (Allocate, Retain, Release,
// StoreRefs). Each is all or none; each leaves the census (census.h) true
// or, if the daemon dies midway, repairable to one outcome.
#include "core/channel.h"

#include <atomic>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"
#include "structd/shm/field.h"

namespace structd::server {

absl::StatusOr<std::vector<shm::Ref>> Channel::Allocate(
    const std::string& session_id, shm::TypeToken token, uint32_t count,
    const std::vector<uint32_t>& into_slots) {
  base::MutexLock lock(&mu_);
  return GuardLocked(AllocateLocked(session_id, token, count, into_slots));
}

absl::StatusOr<std::vector<shm::Ref>> Channel::AllocateLocked(
    const std::string& session_id, shm::TypeToken token, uint32_t count,
    const std::vector<uint32_t>& into_slots) {
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
  if (!ledger.ok()) return ledger.status();
  absl::StatusOr<const RegisteredType*> type = registry_.Find(token);
  if (!type.ok()) return type.status();
  // Slots to write, checked before anything is allocated.
  std::optional<shm::SessionRecord> record;
  if (!into_slots.empty()) {
    if (into_slots.size() != count) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "into_slots: %d slots for %d instances (give one slot per instance, or none)",
          into_slots.size(), count));
    }
    absl::StatusOr<shm::SessionRecord> view =
        (*ledger)->record().is_null()
            ? absl::FailedPreconditionError(
                  "into_slots: the session has no record (call OpenSessionRecord first)")
            : RecordViewLocked((*ledger)->record());
    if (!view.ok()) return view.status();
    std::set<uint32_t> seen;
    for (uint32_t slot : into_slots) {
      if (slot >= shm::kRecordSlots || !seen.insert(slot).second) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "into_slots: slot %u is %s (a record has slots 0 to %u; name each once)", slot,
            slot >= shm::kRecordSlots ? "out of range" : "repeated", shm::kRecordSlots - 1));
      }
      if (std::atomic_ref<uint64_t>(*view->slot(slot)).load(std::memory_order_acquire) != 0) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "into_slots: slot %u of the session's record holds a reference (name free slots)",
            slot));
      }
    }
    record = *view;
  }
  std::vector<shm::Ref> refs;
  uint32_t extents_before = arena_->extent_count();
  absl::Status s = allocator_->AllocateBatch((*type)->type_index,
                                             (*type)->layout, count, refs);
  if (arena_->extent_count() != extents_before) {
    spdlog::info("channel '{}': arena grown to {} extents ({} bytes)", name_,
                 arena_->extent_count(),
                 uint64_t{arena_->extent_count()} * arena_->extent_size());
  }
  if (!s.ok()) {
    spdlog::warn("channel '{}': allocation of {} failed: {}", name_, count,
                 std::string(s.message()));
    return s;
  }
  if (record) {
    // One store each: a daemon killed before a slot's store leaves that
    // instance unreferenced, and the census frees it.
    for (size_t i = 0; i < refs.size(); ++i) {
      std::atomic_ref<uint64_t>(*record->slot(into_slots[i]))
          .store(refs[i].bits(), std::memory_order_release);
    }
    return refs;
  }
  if (absl::Status ls = (*ledger)->AddAll(refs); !ls.ok()) {
    shm::Allocator::TypeLookup types = TypesLocked();
    for (shm::Ref r : refs) {
      LogIfFailed(allocator_->Release(r, types).status(), "undoing an allocation");
    }
    return ls;
  }
  return refs;
}

absl::Status Channel::ResolveAllLocked(
    const std::vector<shm::Ref>& refs) const {
  for (size_t i = 0; i < refs.size(); ++i) {
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(refs[i]);
    if (!inst.ok()) {
      return absl::Status(inst.status().code(),
                          absl::StrCat("refs[", i, "]: ", inst.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Channel::Retain(const std::string& session_id,
                             const std::vector<shm::Ref>& refs) {
  base::MutexLock lock(&mu_);
  return GuardLocked(RetainLocked(session_id, refs));
}

absl::Status Channel::RetainLocked(const std::string& session_id,
                             const std::vector<shm::Ref>& refs) {
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
  if (!ledger.ok()) return ledger.status();
  if (absl::Status s = ResolveAllLocked(refs); !s.ok()) return s;
  shm::Allocator::TypeLookup types = TypesLocked();
  shm::Allocator* allocator = allocator_.get();  // the lambda runs under mu_
  auto undo = [&](size_t upto) {
    for (size_t j = 0; j < upto; ++j) {
      (*ledger)->Remove(refs[j]);
      LogIfFailed(allocator->Release(refs[j], types).status(), "undoing a retain");
    }
  };
  for (size_t i = 0; i < refs.size(); ++i) {
    absl::Status s = allocator_->Retain(refs[i]);
    if (s.ok()) {
      s = (*ledger)->Add(refs[i]);
      if (!s.ok()) {
        LogIfFailed(allocator_->Release(refs[i], types).status(), "undoing a retain");
      }
    }
    if (!s.ok()) {
      undo(i);  // all or none
      return absl::Status(s.code(),
                          absl::StrCat("refs[", i, "]: ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Channel::Release(const std::string& session_id,
                                          const std::vector<shm::Ref>& refs) {
  base::MutexLock lock(&mu_);
  return GuardLocked(ReleaseLocked(session_id, refs));
}

absl::StatusOr<uint64_t> Channel::ReleaseLocked(const std::string& session_id,
                                          const std::vector<shm::Ref>& refs) {
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
  if (!ledger.ok()) return ledger.status();
  // A malformed ref is INVALID_ARGUMENT and a stale one NOT_FOUND, as for
  // every other call taking refs; then ownership of every ref (with
  // multiplicity) is checked before changing anything: all or none.
  for (size_t i = 0; i < refs.size(); ++i) {
    if (auto r = arena_->Resolve(refs[i]); !r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat("refs[", i, "]: ", r.status().message()));
    }
  }
  // A reference the client gave up from a slot of its record (a dropped
  // Owned it had received through a port) is taken from that slot; the
  // rest from the ledger.
  const std::vector<SlotTake> from_slots = PlanMarkedSlotsLocked(**ledger, refs);
  std::vector<bool> in_slot(refs.size(), false);
  for (const SlotTake& t : from_slots) in_slot[t.index] = true;
  std::vector<shm::Ref> taken;
  for (size_t i = 0; i < refs.size(); ++i) {
    if (in_slot[i]) continue;
    if (!(*ledger)->Remove(refs[i])) {
      for (shm::Ref r : taken) LogIfFailed((*ledger)->Add(r), "undoing a release");
      return absl::FailedPreconditionError(absl::StrFormat(
          "refs[%d] %s: this session does not own that reference (release "
          "only refs you allocated, retained or received, once per reference)",
          i, refs[i].ToString()));
    }
    taken.push_back(refs[i]);
  }
  for (shm::Ref r : TakeMarkedSlotsLocked(**ledger, from_slots)) taken.push_back(r);
  uint64_t freed = 0;
  shm::Allocator::TypeLookup types = TypesLocked();
  for (shm::Ref r : taken) {
    // The ledger no longer holds it: a failure here (a refcount already
    // zero: a scribbled header) is logged, and the census repairs it.
    absl::StatusOr<shm::ReleaseResult> rr = allocator_->Release(r, types);
    LogIfFailed(rr.status(), "releasing a reference");
    if (rr.ok()) freed += rr->freed;
  }
  return freed;
}

absl::StatusOr<uint64_t> Channel::StoreRefs(
    const std::string& session_id, const std::vector<RefStore>& stores) {
  base::MutexLock lock(&mu_);
  return GuardLocked(StoreRefsLocked(session_id, stores));
}

absl::StatusOr<uint64_t> Channel::StoreRefsLocked(
    const std::string& session_id, const std::vector<RefStore>& stores) {
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  // An operator's store has no session, so no ledger to move from.
  Ledger* ledger = nullptr;
  if (!session_id.empty()) {
    absl::StatusOr<Ledger*> found = LedgerLocked(session_id);
    if (!found.ok()) return found.status();
    ledger = *found;
  }
  auto error = [](absl::StatusCode code, size_t i, absl::string_view what,
                  absl::string_view message) {
    return absl::Status(code, absl::StrCat("stores[", i, "]", what, ": ", message));
  };
  // Validate everything first.
  std::vector<shm::RefField> fields;
  std::vector<uint32_t> offsets;  // of each field in its payload
  fields.reserve(stores.size());
  for (size_t i = 0; i < stores.size(); ++i) {
    const RefStore& st = stores[i];
    absl::StatusOr<shm::InstancePtr> target = arena_->Resolve(st.target);
    if (!target.ok()) {
      return error(target.status().code(), i, ".target", target.status().message());
    }
    const RegisteredType* type = registry_.FindByIndex(target->type_index());
    if (type == nullptr || !target->Fits(type->layout.size())) {
      return error(absl::StatusCode::kDataLoss, i, ".target",
                   absl::StrCat(st.target.ToString(),
                                " has a damaged header (type index ",
                                target->type_index(),
                                "); run structctl check on the channel"));
    }
    const auto& layout_fields = type->layout.fields();
    if (st.field >= layout_fields.size()) {
      return error(absl::StatusCode::kInvalidArgument, i, ".field",
                   absl::StrCat("'", type->key, "' has ", layout_fields.size(),
                                " fields; there is no field ", st.field,
                                " (use the index of a ref field)"));
    }
    const shm::Field& field = layout_fields[st.field];
    if (field.kind() != shm::FieldKind::kRef) {
      return error(absl::StatusCode::kInvalidArgument, i, ".field",
                   absl::StrCat("'", type->key, ".", field.name(), "' is ",
                                shm::FieldTypeName(field.spec),
                                ", not a ref (store refs into ref fields only)"));
    }
    if (!st.value.is_null()) {
      absl::StatusOr<shm::InstancePtr> value = arena_->Resolve(st.value);
      if (!value.ok()) {
        return error(value.status().code(), i, ".value", value.status().message());
      }
      const shm::TypeToken want = field.spec.ref_target;
      const RegisteredType* vt = registry_.FindByIndex(value->type_index());
      if (!want.is_zero() && (vt == nullptr || vt->token != want)) {
        return error(absl::StatusCode::kFailedPrecondition, i, ".value",
                     absl::StrCat("'", type->key, ".", field.name(),
                                  "' only holds refs to type ", want.ToHex(),
                                  ", and ", st.value.ToString(), " is a '",
                                  vt ? vt->key : "?", "'"));
      }
    }
    fields.emplace_back(target->payload() + field.offset);
    offsets.push_back(field.offset);
  }
  // Moved references must be in the ledger, with multiplicity.
  std::map<uint64_t, uint64_t> moves;  // ref bits -> times moved
  for (size_t i = 0; i < stores.size(); ++i) {
    const RefStore& st = stores[i];
    if (st.value.is_null() || !st.move) continue;
    if (ledger == nullptr || ++moves[st.value.bits()] > ledger->Count(st.value)) {
      return error(absl::StatusCode::kFailedPrecondition, i, ".value",
                   absl::StrCat(st.value.ToString(),
                                ": this session does not own that reference "
                                "(move only refs you hold, once each; or "
                                "store without move to add a reference)"));
    }
  }
  // Retain what is stored without move. A crash from here on is repaired
  // by the census, which counts fields and ledgers, not these increments.
  shm::Allocator::TypeLookup types = TypesLocked();
  std::vector<size_t> retained;
  for (size_t i = 0; i < stores.size(); ++i) {
    const RefStore& st = stores[i];
    if (st.value.is_null() || st.move) continue;
    if (absl::Status s = allocator_->Retain(st.value); !s.ok()) {
      for (size_t j : retained) {
        LogIfFailed(allocator_->Release(stores[j].value, types).status(),
                    "undoing a StoreRefs retain");
      }
      return error(s.code(), i, ".value", s.message());
    }
    retained.push_back(i);
  }
  // Write ahead what the fields and the ledger will hold (store_intent.h),
  // then change both, then forget the intent.
  StoreIntent intent;
  intent.session = session_id;
  for (size_t i = 0; i < stores.size(); ++i) {
    intent.fields.push_back({stores[i].target, offsets[i], stores[i].value});
  }
  for (const auto& [bits, n] : moves) {
    shm::Ref r = shm::Ref::FromBits(bits);
    intent.counts.push_back({r, ledger->Count(r) - n});
  }
  if (absl::Status s = WriteStoreIntent(IntentPath(), intent); !s.ok()) {
    for (size_t j : retained) {
      LogIfFailed(allocator_->Release(stores[j].value, types).status(),
                  "undoing a StoreRefs retain");
    }
    return absl::Status(s.code(), absl::StrCat("channel '", name_, "': ", s.message()));
  }
  std::vector<shm::Ref> previous;
  for (size_t i = 0; i < stores.size(); ++i) {
    shm::Ref old = fields[i].exchange(stores[i].value);
    if (!old.is_null()) previous.push_back(old);
  }
  for (const StoreIntent::LedgerCount& c : intent.counts) {
    if (absl::Status s = ledger->SetCount(c.ref, c.count); !s.ok()) {
      spdlog::error("channel '{}': StoreRefs: {}", name_, std::string(s.message()));
    }
  }
  RemoveStoreIntent(IntentPath());
  // Release what the fields held.
  uint64_t freed = 0;
  for (shm::Ref old : previous) {
    absl::StatusOr<shm::ReleaseResult> rr = allocator_->Release(old, types);
    LogIfFailed(rr.status(), "releasing what a ref field held");
    if (rr.ok()) freed += rr->freed;
  }
  return freed;
}

}  // namespace structd::server
