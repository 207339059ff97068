// Channel: read-only admin inspection (ListInstances, Inspect) and the
// consistency check, all on the channel lock.
#include "core/channel.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/census.h"
#include "structd/shm/field.h"
#include "structd/shm/format_value.h"
#include "structd/shm/walk.h"

namespace structd::server {

InstanceListing Channel::ListInstances(shm::TypeToken filter,
                                       uint32_t limit) const {
  base::MutexLock lock(&mu_);
  if (arena_ == nullptr) {
    return {};
  }
  InstanceListing out;
  std::map<uint32_t, shm::TypeCount> counts;
  const TypeRegistry* registry = &registry_;  // the walk runs under mu_
  shm::ForEachInstance(*arena_, [&](const shm::InstancePtr& inst) {
    uint32_t index = inst.type_index();
    const RegisteredType* t = registry->FindByIndex(index);
    shm::TypeToken token = t ? t->token : shm::TypeToken{};
    if (!filter.is_zero() && token != filter) return true;
    shm::TypeCount& c = counts[index];
    c.token = token;
    c.key = t ? t->key : absl::StrCat("<unknown type index ", index, ">");
    ++c.count;
    c.bytes += inst.capacity();
    if (out.instances.size() < limit) {
      out.instances.push_back(
          {inst.ref(), token, inst.header().refcount.load()});
    } else if (limit > 0) {
      out.truncated = true;
    }
    return true;
  });
  for (auto& [index, c] : counts) out.counts.push_back(std::move(c));
  return out;
}

void Channel::InspectLocked(shm::Ref ref, uint32_t depth,
                            std::set<uint64_t>& seen,
                            DecodedInstance& out) const {
  out.ref = ref;
  absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
  if (!inst.ok()) {
    out.error = std::string(inst.status().message());
    return;
  }
  out.refcount = inst->header().refcount.load();
  out.generation = inst->header().generation.load();
  const RegisteredType* t = registry_.FindByIndex(inst->type_index());
  if (t == nullptr) {
    out.error = absl::StrCat("type index ", inst->type_index(),
                             " is not registered in this channel (damaged "
                             "header?)");
    return;
  }
  out.token = t->token;
  out.key = t->key;
  if (!inst->Fits(t->layout.size())) {
    out.error = absl::StrCat("layout of ", t->layout.size(),
                             " bytes does not fit the block of ",
                             inst->capacity(), " (damaged header?)");
    return;
  }
  seen.insert(ref.bits());
  for (const shm::Field& f : t->layout.fields()) {
    DecodedField fv;
    fv.name = f.name();
    fv.type = shm::FieldTypeName(f.spec);
    fv.value = shm::FormatFieldValue(f, *inst);
    if (f.kind() == shm::FieldKind::kRef && depth > 0) {
      shm::Ref target = shm::RefField(inst->payload() + f.offset).load();
      if (target && !seen.count(target.bits())) {
        fv.target.emplace_back();
        InspectLocked(target, depth - 1, seen, fv.target.front());
      }
    }
    out.fields.push_back(std::move(fv));
  }
}

absl::StatusOr<DecodedInstance> Channel::Inspect(shm::Ref ref,
                                              uint32_t depth) const {
  if (depth > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "depth ", depth, ": at most 8 ref hops are followed (lower it)"));
  }
  base::MutexLock lock(&mu_);
  return GuardLocked(InspectTopLocked(ref, depth));
}

absl::StatusOr<DecodedInstance> Channel::InspectTopLocked(shm::Ref ref, uint32_t depth) const {
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  if (absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
      !inst.ok()) {
    return inst.status();
  }
  DecodedInstance view;
  std::set<uint64_t> seen;
  InspectLocked(ref, depth, seen, view);
  return view;
}

CheckReport Channel::Check() const {
  base::MutexLock lock(&mu_);
  if (arena_ == nullptr) {
    return {};
  }
  CheckReport report;
  if (absl::Status s = UsableLocked(); !s.ok()) {
    report.problems.push_back({shm::Ref(), std::string(s.message())});
    return report;
  }
  for (const std::string& session : damaged_ledgers_) {
    report.problems.push_back(
        {shm::Ref(), absl::StrCat("ledger of session ", session.substr(0, 8),
                                  " is damaged (kept as ledgers/", session,
                                  ".damaged): refcounts may count what it held")});
  }
  const GatedCensus gated = TakeGatedCensusLocked();
  const Census& census = gated.census;
  report.instances_checked = census.instances.size();
  for (const std::string& root : census.dangling_roots) {
    report.problems.push_back(
        {roots_.at(root), absl::StrCat("root '", root, "' names no live instance")});
  }
  for (const Census::LedgerEntryRef& e : census.dangling_entries) {
    report.problems.push_back({e.ref, absl::StrCat("ledger of session ", e.session.substr(0, 8),
                                                   " names no live instance")});
  }
  for (const Census::FieldRef& f : census.dangling_fields) {
    report.problems.push_back({f.holder, absl::StrCat("ref field at offset ", f.offset,
                                                      " names no live instance (",
                                                      f.target.ToString(), ")")});
  }
  for (const Census::SlotRef& slot : census.dangling_slots) {
    report.problems.push_back(
        {slot.value, absl::StrCat("slot ", slot.slot, " of the record of session ",
                                  slot.session.empty() ? "(ended)" : slot.session.substr(0, 8),
                                  " names no live instance")});
  }
  for (const Census::Problem& p : census.problems) report.problems.push_back({p.ref, p.what});
  for (const std::string& m : allocator_->DescriptorMismatches()) {
    report.problems.push_back({shm::Ref(), m});
  }
  for (shm::Ref ref : census.instances) {
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
    if (!inst.ok()) continue;  // freed meanwhile by a member's scribble
    uint32_t refcount = inst->header().refcount.load();
    uint64_t want = census.Expected(ref);
    // A move a stopped client has in flight may be counted twice or not
    // at all (doc/arena-format.md, "Session records"): not a problem of the channel.
    if (gated.in_flight.count(Census::Block(ref)) != 0) continue;
    if (refcount != want) {
      report.problems.push_back(
          {ref, want == 0 ? absl::StrCat("leaked: refcount ", refcount,
                                         " but no reference to it exists")
                          : absl::StrCat("refcount ", refcount, ", but ", want,
                                         " references exist")});
    }
  }
  OpenGatesLocked(gated);
  return report;
}

}  // namespace structd::server
