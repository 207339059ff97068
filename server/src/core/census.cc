#include "core/census.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "structd/shm/field.h"
#include "structd/shm/walk.h"

namespace structd::server {

Census TakeCensus(const shm::Arena& arena, const TypeRegistry& registry,
                  const std::map<std::string, shm::Ref>& roots,
                  const std::map<std::string, std::unique_ptr<Ledger>>& ledgers,
                  const std::vector<HeldRecord>& records) {
  Census c;
  auto live = [&](shm::Ref r) { return arena.Resolve(r).ok(); };
  for (const auto& [name, ref] : roots) {
    if (live(ref)) {
      ++c.expected[Census::Block(ref)];
    } else {
      c.dangling_roots.push_back(name);
    }
  }
  for (const auto& [session, ledger] : ledgers) {
    for (const LedgerEntry& e : ledger->Entries()) {
      // An entry names a block: its owner may have recycled the instance
      // in place since the entry was written (shm/local_recycle.h).
      if (arena.ResolveCurrent(e.ref).ok()) {
        c.expected[Census::Block(e.ref)] += e.count;
        c.from_sessions[Census::Block(e.ref)] += e.count;
      } else {
        c.dangling_entries.push_back({session, e.ref});
      }
    }
  }
  for (const HeldRecord& r : records) {
    ++c.expected[Census::Block(r.ref)];
    for (uint32_t i = 0; i < shm::kRecordSlots; ++i) {
      const shm::Ref value = shm::Ref::FromBits(
          std::atomic_ref<uint64_t>(*r.view.slot(i)).load(std::memory_order_acquire));
      if (value.is_null()) continue;
      // A slot names a block, as a ledger entry does.
      if (arena.ResolveCurrent(value).ok()) {
        ++c.expected[Census::Block(value)];
        ++c.from_sessions[Census::Block(value)];
      } else {
        c.dangling_slots.push_back({r.session, r.view, i, value});
      }
    }
  }
  std::vector<shm::WalkProblem> walk =
      shm::ForEachInstance(arena, [&](const shm::InstancePtr& inst) {
        c.instances.push_back(inst.ref());
        const RegisteredType* t = registry.FindByIndex(inst.type_index());
        if (t == nullptr) {
          c.problems.push_back(
              {inst.ref(), absl::StrCat("type index ", inst.type_index(), " is not registered")});
          return true;
        }
        if (!inst.Fits(t->layout.size())) {
          c.problems.push_back({inst.ref(), absl::StrCat("type '", t->key, "' (",
                                                         t->layout.size(),
                                                         " bytes) does not fit its block of ",
                                                         inst.capacity())});
          return true;
        }
        for (uint32_t off : t->layout.ref_offsets()) {
          shm::Ref child = shm::RefField(inst.payload() + off).load();
          if (child.is_null()) continue;
          if (live(child)) {
            ++c.expected[Census::Block(child)];
          } else {
            c.dangling_fields.push_back({inst.ref(), off, child});
          }
        }
        return true;
      });
  for (const shm::WalkProblem& p : walk) c.problems.push_back({p.ref, p.what});
  return c;
}

}  // namespace structd::server
