// Channel: re-adoption after a daemon restart (metadata, arena, ledgers,
// an unfinished StoreRefs) and the census-based repair of what an
// interrupted operation left. See doc/recovery.md.
#include "core/channel.h"

#include <unistd.h>
#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/census.h"
#include "core/private_dir.h"
#include "spdlog/spdlog.h"
#include "structd/shm/field.h"

namespace structd::server {

absl::StatusOr<std::unique_ptr<Channel>> Channel::Restore(
    const std::string& dir, const Limits& limits, std::shared_ptr<DescriptorStore> memfds) {
  absl::StatusOr<std::unique_ptr<MetaStore>> store = MetaStore::Open(dir);
  if (!store.ok()) return store.status();
  const ChannelMeta& meta = (*store)->meta();
  if (meta.arena_memfd && memfds == nullptr) {
    return absl::FailedPreconditionError(
        "its arena is sealed memory kept in a descriptor store (arena_backing = \"memfd\"), "
        "and this daemon runs without one; start it under systemd with "
        "FileDescriptorStoreMax set (deploy/systemd/structd.service)");
  }
  std::vector<std::string> dirs = {dir, dir + "/ledgers"};
  if (!meta.arena_memfd) dirs.push_back(dir + "/arena");
  for (const std::string& d : dirs) {
    // Older daemons left these 0755; the state is the daemon's alone.
    if (absl::Status s = MakePrivateDir(d); !s.ok()) return s;
  }
  const std::string path = dir + "/meta.toml";
  auto damaged = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": ", what,
                                            " (the file is damaged; restore it from a "
                                            "backup or remove the channel directory)"));
  };
  std::unique_ptr<Channel> c(new Channel());
  // Not shared yet; locked so the guarded members are set under mu_.
  base::MutexLock lock(&c->mu_);
  c->dir_ = dir;
  c->id_ = meta.id;
  c->name_ = meta.name;
  c->created_unix_ms_ = meta.created_unix_ms;
  c->creator_uid_ = meta.creator_uid >= 0 ? static_cast<uid_t>(meta.creator_uid) : getuid();
  c->arena_memfd_ = meta.arena_memfd;
  c->owner_capability_ = meta.owner_capability;
  c->member_capability_ = meta.member_capability;
  c->dropped_ = meta.dropped;
  c->max_roots_ = limits.max_roots;
  // Types registered under larger limits than today's still load: limits
  // bound what may be added, not what exists.
  c->registry_ = TypeRegistry(shm::LayoutLimits::None(), RegistryLimits{0, 0});
  for (const ChannelMeta::Type& t : meta.types) {
    std::vector<shm::FieldSpec> specs;
    for (const std::string& text : t.fields) {
      size_t colon = text.find(':');
      shm::FieldSpec spec;
      if (colon == std::string::npos) return damaged(absl::StrCat("field '", text, "'"));
      spec.name = text.substr(0, colon);
      if (absl::Status st = shm::ParseFieldType(text.substr(colon + 1), spec); !st.ok()) {
        return damaged(st.message());
      }
      specs.push_back(std::move(spec));
    }
    if (absl::Status st = c->registry_.Restore(t.key, t.token, t.type_index, std::move(specs));
        !st.ok()) {
      return damaged(st.message());
    }
  }
  c->registry_.SetLimits(limits.layout, limits.registry);
  if (meta.sealed) c->registry_.Seal();
  c->roots_ = meta.roots;
  // What the daemon knows of the arena (absent in metadata written before
  // it was recorded): a header scribbled in shared memory is put back from
  // it instead of costing the channel.
  const shm::ArenaIdentity identity = meta.arena;
  // The header's extent count is shared memory: Adopt trusts the files.
  uint32_t published = 0;
  std::unique_ptr<shm::ArenaStorage> storage;
  if (meta.arena_memfd) {
    ChannelArenaNames names(meta.id);
    std::vector<std::string> strays;
    std::map<shm::ArenaFile, base::UniqueFd> kept =
        names.Files(memfds->Take(names.prefix()), &strays);
    for (const std::string& name : strays) {
      spdlog::warn("channel '{}': descriptor '{}' handed back by the store is none of its "
                   "files; closed", c->name_, name);
      memfds->Forget(name);
    }
    if (kept.empty()) {
      c->restore_repairs_.push_back(
          "its sealed memory was not handed back by the descriptor store (the daemon was "
          "stopped rather than restarted, the machine rebooted, or the store was off): every "
          "instance of the channel is lost; its types and capabilities are kept");
    }
    if (auto h = kept.find(shm::ArenaFile{}); h != kept.end()) {
      shm::ArenaHeader header;
      if (pread(h->second.get(), &header, sizeof header, 0) == sizeof header) {
        published = header.extent_count.load();
      }
    }
    auto sealed = std::make_unique<shm::SealedMemoryStorage>(meta.id, names.KeeperFor(memfds),
                                                             std::move(kept));
    if (!sealed->Check().ok()) c->restore_repairs_.push_back(std::string(sealed->Check().message()));
    storage = std::move(sealed);
  } else {
    if (auto peek = shm::Arena::Open(dir + "/arena", shm::Access::kReadOnly); peek.ok()) {
      published = (*peek)->raw_extent_count();
    }
    storage = shm::DirectoryStorage(dir + "/arena");
  }
  absl::StatusOr<std::unique_ptr<shm::Arena>> arena =
      shm::Arena::Adopt(std::move(storage), identity, &c->restore_repairs_);
  if (!arena.ok()) return arena.status();
  for (const std::string& repair : c->restore_repairs_) {
    spdlog::error("channel '{}': {}", c->name_, repair);
  }
  if ((*arena)->extent_count() != published) {
    spdlog::warn("channel '{}': arena header said {} extents, {} extent files found; "
                 "the header now says {}",
                 c->name_, published, (*arena)->extent_count(), (*arena)->extent_count());
  }
  absl::StatusOr<std::unique_ptr<shm::Allocator>> alloc = shm::Allocator::Adopt(arena->get());
  if (!alloc.ok()) return alloc.status();
  c->arena_ = std::move(*arena);
  c->allocator_ = std::move(*alloc);
  c->store_ = std::move(*store);
  if (identity.epoch == 0) {
    // Metadata of an older daemon: record the identity for the next start.
    if (absl::Status s = c->store_->SetArena(c->arena_->identity()); !s.ok()) {
      spdlog::warn("channel '{}': cannot record the arena's identity: {}", c->name_,
                   std::string(s.message()));
    }
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/ledgers", ec)) {
    std::string session = entry.path().filename().string();
    if (session.ends_with(".new")) {  // a grow that did not finish
      std::filesystem::remove(entry.path(), ec);
      continue;
    }
    if (session.ends_with(".damaged")) {  // set aside by an earlier start
      c->damaged_ledgers_.push_back(session.substr(0, session.size() - 8));
      continue;
    }
    absl::StatusOr<std::unique_ptr<Ledger>> ledger =
        Ledger::Open(entry.path().string(), &c->ledger_damage_);
    if (!ledger.ok()) {
      // Keep the file, out of the way of a new ledger of that name, and
      // keep what the session held counted (see DamagedLedgerSessions).
      std::string aside = entry.path().string() + ".damaged";
      std::filesystem::rename(entry.path(), aside, ec);
      spdlog::error(
          "channel '{}': ledger of session {} unreadable ({}); kept as {}. The references "
          "it recorded stay counted (nothing in this channel is freed by recovery while the "
          "file exists) and the session cannot resume. After checking the channel with "
          "'structctl check', remove the file to let recovery free what nothing refers to.",
          c->name_, session.substr(0, 8), std::string(ledger.status().message()), aside);
      c->damaged_ledgers_.push_back(session);
      continue;
    }
    c->next_record_tag_ = std::max(c->next_record_tag_, (*ledger)->record_tag() + 1);
    c->ledgers_[session] = std::move(*ledger);
  }
  // A StoreRefs the previous daemon did not finish: complete it.
  absl::StatusOr<std::optional<StoreIntent>> intent = ReadStoreIntent(c->IntentPath());
  if (!intent.ok()) {
    spdlog::error("channel '{}': {}", c->name_, std::string(intent.status().message()));
  } else if (intent->has_value()) {
    c->ReplayIntentLocked(**intent);
    spdlog::warn("channel '{}': completed a StoreRefs of session {} that the previous daemon "
                 "was applying when it stopped ({} fields)",
                 c->name_, (*intent)->session.substr(0, 8), (*intent)->fields.size());
  }
  RemoveStoreIntent(c->IntentPath());
  return c;
}

Channel::RepairReport Channel::Reconcile() {
  base::MutexLock lock(&mu_);
  return ReconcileLocked();
}

Channel::RepairReport Channel::ReconcileLocked() {
  RepairReport report;
  if (arena_ == nullptr) return report;
  // Before the census: a message the previous daemon was moving is then
  // in one place (doc/ports.md, "Crash points").
  report.port_moves_repaired = RepairDaemonPortMovesLocked();
  const GatedCensus gated = TakeGatedCensusLocked();
  const Census& census = gated.census;
  for (const Census::Problem& p : census.problems) {
    spdlog::warn("channel '{}': recovery: {} {}", name_, p.ref ? p.ref.ToString() : "", p.what);
  }
  // Drop every holder of a reference to nothing.
  for (const std::string& root : census.dangling_roots) {
    roots_.erase(root);
    ++report.dangling_dropped;
    LogIfFailed(store_->DeleteRoot(root), "recovery: recording a dropped dangling root");
  }
  for (const Census::LedgerEntryRef& e : census.dangling_entries) {
    ++report.dangling_dropped;
    LogIfFailed(ledgers_.at(e.session)->SetCount(e.ref, 0),
                "recovery: dropping a dangling ledger entry");
  }
  for (const Census::FieldRef& f : census.dangling_fields) {
    // Members may write the arena meanwhile: clear the field only if it
    // still names what the census saw, and only in a holder still live.
    absl::StatusOr<shm::InstancePtr> holder = arena_->Resolve(f.holder);
    if (!holder.ok()) continue;
    shm::Ref expected = f.target;
    if (shm::RefField(holder->payload() + f.offset).compare_exchange(expected, shm::Ref())) {
      ++report.dangling_dropped;
    }
  }
  for (const Census::SlotRef& slot : census.dangling_slots) {
    // The client may have moved the slot on since: cleared only if it
    // still names what the census saw.
    uint64_t expected = slot.value.bits();
    if (std::atomic_ref<uint64_t>(*slot.record.slot(slot.slot))
            .compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
      ++report.dangling_dropped;
    }
  }
  // Every refcount to what exists; what nothing refers to is freed (its
  // fields' references, counted above, are released in turn). With a
  // damaged ledger, refcounts are only ever raised (what it held stays
  // counted).
  const bool frozen = !damaged_ledgers_.empty();
  shm::Allocator::TypeLookup types = TypesLocked();
  std::vector<shm::Ref> unreferenced;
  for (shm::Ref ref : census.instances) {
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
    if (!inst.ok()) continue;  // changed under us
    uint64_t want = std::min<uint64_t>(census.Expected(ref), UINT32_MAX);
    uint32_t have = inst->header().refcount.load();
    // Named by a move a stopped client has in flight: in its slot and its
    // cell at once (counted twice), so left as it is.
    if (gated.in_flight.count(Census::Block(ref)) != 0) continue;
    if (want == 0) {
      if (frozen) {
        ++report.kept_counted;
      } else {
        unreferenced.push_back(ref);
      }
      continue;
    }
    if (have == want || (frozen && have > want)) continue;
    if (have == 0 && want == 1 && census.FromSessions(ref) == 1) {
      // Honest operations never leave a stored refcount below the
      // references that exist but in one state: the one session that
      // references it claimed it to recycle it in place
      // (shm/local_recycle.h) and has not published it yet. Writing a
      // refcount now would let a retain in before its generation moves;
      // it is left to that session's process (or freed once the process
      // has exited, Channel::Leave).
      continue;
    }
    if (allocator_->SetRefcount(ref, static_cast<uint32_t>(want), types).ok()) {
      ++report.refcounts_fixed;
    }
  }
  for (shm::Ref ref : unreferenced) {
    // Freed by an earlier cascade already: SetRefcount fails to resolve it.
    if (allocator_->SetRefcount(ref, 0, types).ok()) ++report.leaked_freed;
  }
  OpenGatesLocked(gated);
  return report;
}

void Channel::ReplayIntentLocked(const StoreIntent& intent) {
  for (const StoreIntent::FieldValue& f : intent.fields) {
    absl::StatusOr<shm::InstancePtr> target = arena_->Resolve(f.target);
    if (!target.ok()) continue;
    const RegisteredType* t = registry_.FindByIndex(target->type_index());
    if (t == nullptr || !target->Fits(t->layout.size())) continue;
    const auto& refs = t->layout.ref_offsets();
    if (std::find(refs.begin(), refs.end(), f.offset) == refs.end()) continue;
    shm::RefField(target->payload() + f.offset).store(f.value);
  }
  auto ledger = ledgers_.find(intent.session);
  if (ledger == ledgers_.end()) return;
  for (const StoreIntent::LedgerCount& c : intent.counts) {
    if (absl::Status s = ledger->second->SetCount(c.ref, c.count); !s.ok()) {
      spdlog::error("channel '{}': completing a StoreRefs: {}", name_, std::string(s.message()));
    }
  }
}

std::vector<std::string> Channel::DamagedLedgerSessions() const {
  base::MutexLock lock(&mu_);
  return damaged_ledgers_;
}

}  // namespace structd::server
