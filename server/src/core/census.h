#ifndef STRUCTD_SERVER_CORE_CENSUS_H_
#define STRUCTD_SERVER_CORE_CENSUS_H_

// The census of a channel's references: one count, from everything that
// can hold a reference (roots, ledger entries, ref fields of live
// instances, the array<ref,N> of built-in types: a port's messages,
// session records and their slots), of
// how many references to each live instance exist. The
// consistency check (Channel::Check) reports from it; recovery
// (Channel::Reconcile) repairs from it. It only reads: members may write
// the arena meanwhile, and whoever acts on it resolves again first.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/ledger.h"
#include "core/type_registry.h"
#include "structd/shm/arena.h"
#include "structd/shm/ref.h"
#include "structd/shm/session_record.h"

namespace structd::server {

struct Census {
  // References that exist, by the block of the instance they name (a
  // ref's bits without its generation: a ledger entry names a block whose
  // owner may recycle it in place, even while the census is taken).
  std::map<uint64_t, uint64_t> expected;
  static uint64_t Block(shm::Ref ref) {
    return ref.bits() & ~uint64_t{shm::kGenerationMask};
  }
  // Every live instance the walk found, in arena order.
  std::vector<shm::Ref> instances;
  // Holders of a reference to no live instance.
  std::vector<std::string> dangling_roots;  // root names
  struct LedgerEntryRef {
    std::string session;
    shm::Ref ref;
  };
  std::vector<LedgerEntryRef> dangling_entries;
  struct FieldRef {
    shm::Ref holder;      // the instance with the ref field
    uint32_t offset = 0;  // of the field in the holder's payload
    shm::Ref target;      // what it names
  };
  std::vector<FieldRef> dangling_fields;
  struct SlotRef {
    std::string session;
    shm::SessionRecord record;
    uint32_t slot = 0;
    shm::Ref value;  // what it names
  };
  std::vector<SlotRef> dangling_slots;
  // Instances whose fields cannot be read (unknown type index, a layout
  // bigger than the block), and what the walk itself found damaged.
  struct Problem {
    shm::Ref ref;
    std::string what;
  };
  std::vector<Problem> problems;

  // The part of `expected` that sessions hold: ledger entries and slots
  // of records (both name blocks a session may recycle in place).
  std::map<uint64_t, uint64_t> from_sessions;
  uint64_t FromSessions(shm::Ref ref) const {
    auto it = from_sessions.find(Block(ref));
    return it == from_sessions.end() ? 0 : it->second;
  }
  uint64_t Expected(shm::Ref ref) const {
    auto it = expected.find(Block(ref));
    return it == expected.end() ? 0 : it->second;
  }
};

// A session's record (shm/session_record.h) as the census reads it: the
// session holds one reference to the record itself, and one to what each
// of its slots names (by block, as ledger entries).
struct HeldRecord {
  std::string session;  // the session, or "" for an ended one (Channel::Leave)
  shm::Ref ref;
  uint32_t tag = 0;
  shm::SessionRecord view;
};

Census TakeCensus(const shm::Arena& arena, const TypeRegistry& registry,
                  const std::map<std::string, shm::Ref>& roots,
                  const std::map<std::string, std::unique_ptr<Ledger>>& ledgers,
                  const std::vector<HeldRecord>& records);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_CENSUS_H_
