#include "server/src/core/channel.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"
#include "server/src/core/private_dir.h"
#include "structd/base/posix.h"
#include "server/src/core/random.h"
#include "structd/shm/field.h"
#include "structd/shm/format_value.h"
#include "structd/shm/walk.h"

namespace structd::server {
namespace {

bool AllChars(const std::string& s, std::string_view extra) {
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || extra.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}


std::string LedgerPath(const std::string& dir, const std::string& session) {
  return absl::StrCat(dir, "/ledgers/", session);
}

// A status on a path that cannot act on it (an undo, a cleanup): logged,
// never dropped silently. None of these is fatal: each can be caused by a
// member scribbling the arena, which is bad input, not a broken invariant
// of the daemon (doc/daemon.md, "Errors nobody waits for").
void LogIfFailed(const std::string& channel, const absl::Status& s, std::string_view what) {
  if (s.ok()) return;
  spdlog::error("channel '{}': {}: {} (refcounts are repaired at the next start; run "
                "'structctl check {}')",
                channel, what, s.ToString(), channel);
}

}  // namespace

bool LooksLikeChannelId(const std::string& text) {
  if (text.size() != 16) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::Status ValidateChannelName(const std::string& name) {
  if (name.empty() || name.size() > 64 || !AllChars(name, "_.-")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel name '", name,
        "': use 1 to 64 characters of letters, digits, '_', '.' and '-'"));
  }
  // Calls accept a channel's name or its id: a name with the shape of an
  // id could shadow another channel.
  if (LooksLikeChannelId(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel name '", name,
        "': 16 lower-case hex digits is the shape of a channel id, which calls accept in "
        "place of a name (choose a name that is not 16 hex digits)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRootName(const std::string& name) {
  if (name.empty() || name.size() > 128 || !AllChars(name, "_.:/-")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "root name '", name,
        "': use 1 to 128 characters of letters, digits, '_', '.', ':', '/' "
        "and '-'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Channel>> Channel::Create(
    const Options& options) {
  if (absl::Status s = ValidateChannelName(options.name); !s.ok()) return s;
  std::unique_ptr<Channel> c(new Channel());
  c->id_ = options.id;
  c->name_ = options.name;
  c->dir_ = options.dir;
  c->owner_capability_ = RandomHex128();
  c->member_capability_ = RandomHex128();
  c->created_unix_ms_ = base::NowUnixMs();
  c->registry_ = TypeRegistry(options.limits.layout, options.limits.registry);
  c->max_roots_ = options.limits.max_roots;
  std::error_code ec;
  for (const std::string& d : {options.dir, options.dir + "/ledgers", options.dir + "/arena"}) {
    if (absl::Status s = MakePrivateDir(d); !s.ok()) {
      std::filesystem::remove_all(options.dir, ec);
      return absl::InternalError(absl::StrCat("channel '", options.name, "': ", s.message()));
    }
  }
  absl::StatusOr<std::unique_ptr<shm::Arena>> arena =
      shm::Arena::Create(options.dir + "/arena", options.arena);
  if (!arena.ok()) {
    std::filesystem::remove_all(options.dir, ec);
    return arena.status();
  }
  absl::StatusOr<std::unique_ptr<shm::Allocator>> alloc =
      shm::Allocator::Adopt(arena->get());
  if (!alloc.ok()) {
    std::filesystem::remove_all(options.dir, ec);
    return alloc.status();
  }
  std::lock_guard<std::mutex> lock(c->mu_);
  c->arena_ = std::move(*arena);
  c->allocator_ = std::move(*alloc);
  ChannelMeta meta;
  meta.id = c->id_;
  meta.name = c->name_;
  meta.owner_capability = c->owner_capability_;
  meta.member_capability = c->member_capability_;
  meta.created_unix_ms = c->created_unix_ms_;
  meta.arena = c->arena_->identity();
  absl::StatusOr<std::unique_ptr<MetaStore>> store = MetaStore::Create(options.dir, meta);
  if (!store.ok()) {
    std::filesystem::remove_all(options.dir, ec);
    return absl::Status(store.status().code(),
                        absl::StrCat("channel '", options.name, "': ", store.status().message()));
  }
  c->store_ = std::move(*store);
  return c;
}

absl::StatusOr<std::unique_ptr<Channel>> Channel::Restore(const std::string& dir,
                                                          const Limits& limits) {
  absl::StatusOr<std::unique_ptr<MetaStore>> store = MetaStore::Open(dir);
  if (!store.ok()) return store.status();
  for (const std::string& d : {dir, dir + "/ledgers", dir + "/arena"}) {
    // Older daemons left these 0755; the state is the daemon's alone.
    if (absl::Status s = MakePrivateDir(d); !s.ok()) return s;
  }
  const ChannelMeta& meta = (*store)->meta();
  const std::string path = dir + "/meta.toml";
  auto damaged = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": ", what,
                                            " (the file is damaged; restore it from a "
                                            "backup or remove the channel directory)"));
  };
  std::unique_ptr<Channel> c(new Channel());
  c->dir_ = dir;
  c->id_ = meta.id;
  c->name_ = meta.name;
  c->created_unix_ms_ = meta.created_unix_ms;
  c->owner_capability_ = meta.owner_capability;
  c->member_capability_ = meta.member_capability;
  c->dropped_ = meta.dropped;
  c->max_roots_ = limits.max_roots;
  // Types registered under larger limits than today's still load: limits
  // bound what may be added, not what exists.
  shm::LayoutLimits unbounded;
  unbounded.max_fields = UINT32_MAX;
  unbounded.max_name_length = UINT32_MAX;
  unbounded.max_payload_size = UINT32_MAX;
  unbounded.max_count = UINT32_MAX;
  c->registry_ = TypeRegistry(unbounded, RegistryLimits{0, 0});
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
  if (auto peek = shm::Arena::Open(dir + "/arena", shm::Access::kReadOnly); peek.ok()) {
    published = (*peek)->raw_extent_count();
  }
  absl::StatusOr<std::unique_ptr<shm::Arena>> arena =
      shm::Arena::Adopt(dir + "/arena", identity, &c->restore_repairs_);
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
  std::lock_guard<std::mutex> lock(c->mu_);
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
  std::lock_guard<std::mutex> lock(mu_);
  RepairReport report;
  if (arena_ == nullptr) return report;
  // Members may write the arena while this runs: every check resolves
  // again, and a StatusOr is never read unchecked.
  auto live = [&](shm::Ref r) { return arena_->Resolve(r).ok(); };
  std::map<uint64_t, uint64_t> expected;  // references that exist, by target
  std::vector<std::string> dangling_roots;
  for (auto it = roots_.begin(); it != roots_.end();) {
    if (!live(it->second)) {
      dangling_roots.push_back(it->first);
      it = roots_.erase(it);
      ++report.dangling_dropped;
    } else {
      ++expected[it->second.bits()];
      ++it;
    }
  }
  for (auto& [session, ledger] : ledgers_) {
    for (const LedgerEntry& e : ledger->Entries()) {
      if (!live(e.ref)) {
        LogIfFailed(name_, ledger->SetCount(e.ref, 0), "recovery: dropping a dangling ledger entry");
        ++report.dangling_dropped;
      } else {
        expected[e.ref.bits()] += e.count;
      }
    }
  }
  std::vector<shm::Ref> instances;
  std::vector<shm::WalkProblem> problems =
      shm::ForEachInstance(*arena_, [&](const shm::InstancePtr& inst) {
        instances.push_back(inst.ref());
        const RegisteredType* t = registry_.FindByIndex(inst.type_index());
        if (t == nullptr || !inst.Fits(t->layout.size())) return true;
        for (uint32_t off : t->layout.ref_offsets()) {
          shm::RefField field(inst.payload() + off);
          shm::Ref child = field.load();
          if (child.is_null()) continue;
          if (!live(child)) {
            field.store(shm::Ref());
            ++report.dangling_dropped;
          } else {
            ++expected[child.bits()];
          }
        }
        return true;
      });
  for (const shm::WalkProblem& p : problems) {
    spdlog::warn("channel '{}': recovery walk: {}", name_, p.what);
  }
  const bool frozen = !damaged_ledgers_.empty();
  std::vector<shm::Ref> unreferenced;
  for (shm::Ref ref : instances) {
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
    if (!inst.ok()) continue;  // changed under us
    auto it = expected.find(ref.bits());
    uint64_t want = it == expected.end() ? 0 : it->second;
    uint32_t have = inst->header().refcount.load();
    if (want == 0) {
      if (frozen) {
        ++report.kept_counted;
      } else {
        unreferenced.push_back(ref);
      }
      continue;
    }
    if (have == want || (frozen && have > want)) continue;
    inst->header().refcount.store(static_cast<uint32_t>(std::min<uint64_t>(want, UINT32_MAX)));
    ++report.refcounts_fixed;
  }
  // Free what nothing refers to; their fields' references (counted above)
  // are released in turn.
  shm::Allocator::TypeLookup types = TypesLocked();
  for (shm::Ref ref : unreferenced) {
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
    if (!inst.ok()) continue;  // freed by an earlier cascade
    inst->header().refcount.store(0);
    if (allocator_->FinishCondemned(ref, types).ok()) ++report.leaked_freed;
  }
  for (const std::string& root : dangling_roots) {
    if (absl::Status s = store_->DeleteRoot(root); !s.ok()) {
      spdlog::error("channel '{}': recovery dropped dangling root '{}' but could not record it "
                    "(it is dropped again at the next start): {}",
                    name_, root, std::string(s.message()));
    }
  }
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
  std::lock_guard<std::mutex> lock(mu_);
  return damaged_ledgers_;
}

absl::Status Channel::Usable() const {
  std::lock_guard<std::mutex> lock(mu_);
  return UsableLocked();
}

absl::Status Channel::UsableLocked() const {
  if (arena_ == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("channel '", name_, "': dropped (create a new channel)"));
  }
  if (absl::Status s = arena_->Intact(); !s.ok()) {
    return absl::DataLossError(absl::StrCat("channel '", name_, "': ", s.message()));
  }
  if (ledger_damage_.damaged()) {
    return absl::DataLossError(absl::StrCat(
        "channel '", name_, "': a ledger file under ", dir_,
        "/ledgers was truncated while the daemon had it mapped (another process of the "
        "daemon's uid did it); restart the daemon to recover the channel, or drop it"));
  }
  return absl::OkStatus();
}

std::vector<std::string> Channel::LedgerSessions() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [session, ledger] : ledgers_) out.push_back(session);
  return out;
}

absl::StatusOr<Role> Channel::CheckCapability(
    const std::string& capability) const {
  if (ConstantTimeEquals(capability, owner_capability_)) return Role::kOwner;
  if (ConstantTimeEquals(capability, member_capability_)) return Role::kMember;
  return absl::PermissionDeniedError(absl::StrCat(
      "channel '", name_,
      "': wrong capability (use the owner or member capability that "
      "CreateChannel returned)"));
}

absl::Status Channel::Join(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (dropped_) {
    return absl::NotFoundError(absl::StrCat(
        "channel '", name_, "': dropped (create a new channel)"));
  }
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  if (ledgers_.count(session_id)) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<Ledger>> ledger =
      Ledger::Create(LedgerPath(dir_, session_id), 0, &ledger_damage_);
  if (!ledger.ok()) return ledger.status();
  ledgers_[session_id] = std::move(*ledger);
  return absl::OkStatus();
}

uint64_t Channel::Leave(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ledgers_.find(session_id);
  if (it == ledgers_.end()) return 0;
  uint64_t released = 0;
  if (UsableLocked().ok()) {
    shm::Allocator::TypeLookup types = TypesLocked();
    for (const LedgerEntry& e : it->second->Entries()) {
      // A ref that no longer resolves was damaged by a member: logged.
      for (uint64_t n = 0; n < e.count; ++n) {
        absl::Status s = allocator_->Release(e.ref, types).status();
        if (!s.ok()) {
          LogIfFailed(name_, s, "releasing what an ended session held");
          break;
        }
        ++released;
      }
    }
  }
  it->second->Unlink();
  ledgers_.erase(it);
  return released;
}

bool Channel::HasSession(const std::string& session_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return ledgers_.count(session_id) != 0;
}

size_t Channel::session_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ledgers_.size();
}

uint64_t Channel::RefsHeld(const std::string& session_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ledgers_.find(session_id);
  return it == ledgers_.end() ? 0 : it->second->size();
}

ArenaSummary Channel::Arena() const {
  std::lock_guard<std::mutex> lock(mu_);
  ArenaSummary a;
  if (arena_ == nullptr) return a;  // destroyed after a drop
  a.path = arena_->dir();
  a.extent_size = arena_->extent_size();
  a.max_extents = arena_->max_extents();
  a.extent_count = arena_->extent_count();
  a.format_version = arena_->format_version();
  a.epoch = arena_->epoch();
  return a;
}

shm::Allocator::TypeLookup Channel::TypesLocked() const {
  return [this](uint32_t index) -> const shm::Layout* {
    const RegisteredType* t = registry_.FindByIndex(index);
    return t ? &t->layout : nullptr;
  };
}

absl::StatusOr<Ledger*> Channel::LedgerLocked(
    const std::string& session_id) const {
  auto it = ledgers_.find(session_id);
  if (it == ledgers_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "channel '", name_, "': this session has not joined it (call "
        "JoinChannel first)"));
  }
  return it->second.get();
}

absl::StatusOr<TypeRegistry::RegisterResult> Channel::RegisterType(
    const std::string& key, std::vector<shm::FieldSpec> fields) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<TypeRegistry::RegisterResult> r =
      registry_.Register(key, std::move(fields));
  if (r.ok() && r->created) {
    ChannelMeta::Type record{key, r->type->token, r->type->type_index, {}};
    for (const shm::Field& f : r->type->layout.fields()) {
      record.fields.push_back(absl::StrCat(f.name(), ":", shm::FieldTypeName(f.spec)));
    }
    if (absl::Status s = store_->AddType(record); !s.ok()) {
      // Registered for this run only; the caller learns it was not saved.
      return absl::Status(s.code(), absl::StrCat("channel '", name_, "': type '", key,
                                                 "' registered but not saved: ", s.message()));
    }
    spdlog::info("channel '{}': type '{}' registered (token {}, {} bytes, "
                 "fingerprint {})",
                 name_, key, r->type->token.ShortHex(), r->type->layout.size(),
                 shm::FingerprintHex(r->type->layout.fingerprint()));
  }
  return r;
}

absl::StatusOr<RegisteredType> Channel::DescribeType(
    shm::TypeToken token) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<const RegisteredType*> t = registry_.Find(token);
  if (!t.ok()) return t.status();
  return **t;
}

std::vector<RegisteredType> Channel::ListTypes(bool* sealed) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (arena_ == nullptr) {
    return {};
  }
  std::vector<RegisteredType> out;
  for (const RegisteredType* t : registry_.List()) out.push_back(*t);
  if (sealed) *sealed = registry_.sealed();
  return out;
}

absl::Status Channel::Seal() {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  if (registry_.sealed()) return absl::OkStatus();
  if (absl::Status s = store_->Seal(); !s.ok()) return s;
  registry_.Seal();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<shm::Ref>> Channel::Allocate(
    const std::string& session_id, shm::TypeToken token, uint32_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::StatusOr<std::vector<shm::Ref>> {
    if (absl::Status s = UsableLocked(); !s.ok()) return s;
    absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
    if (!ledger.ok()) return ledger.status();
    absl::StatusOr<const RegisteredType*> type = registry_.Find(token);
    if (!type.ok()) return type.status();
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
    if (absl::Status ls = (*ledger)->AddAll(refs); !ls.ok()) {
      shm::Allocator::TypeLookup types = TypesLocked();
      for (shm::Ref r : refs) {
        LogIfFailed(name_, allocator_->Release(r, types).status(), "undoing an allocation");
      }
      return ls;
    }
    return refs;
  }());
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
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::Status {
    if (absl::Status s = UsableLocked(); !s.ok()) return s;
    absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
    if (!ledger.ok()) return ledger.status();
    if (absl::Status s = ResolveAllLocked(refs); !s.ok()) return s;
    shm::Allocator::TypeLookup types = TypesLocked();
    auto undo = [&](size_t upto) {
      for (size_t j = 0; j < upto; ++j) {
        (*ledger)->Remove(refs[j]);
        LogIfFailed(name_, allocator_->Release(refs[j], types).status(), "undoing a retain");
      }
    };
    for (size_t i = 0; i < refs.size(); ++i) {
      absl::Status s = allocator_->Retain(refs[i]);
      if (s.ok()) {
        s = (*ledger)->Add(refs[i]);
        if (!s.ok()) {
          LogIfFailed(name_, allocator_->Release(refs[i], types).status(), "undoing a retain");
        }
      }
      if (!s.ok()) {
        undo(i);  // all or none
        return absl::Status(s.code(),
                            absl::StrCat("refs[", i, "]: ", s.message()));
      }
    }
    return absl::OkStatus();
  }());
}

absl::StatusOr<uint64_t> Channel::Release(const std::string& session_id,
                                          const std::vector<shm::Ref>& refs) {
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::StatusOr<uint64_t> {
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
    std::vector<shm::Ref> taken;
    for (size_t i = 0; i < refs.size(); ++i) {
      if (!(*ledger)->Remove(refs[i])) {
        for (shm::Ref r : taken) LogIfFailed(name_, (*ledger)->Add(r), "undoing a release");
        return absl::FailedPreconditionError(absl::StrFormat(
            "refs[%d] %s: this session does not own that reference (release "
            "only refs you allocated or retained, once per reference)",
            i, refs[i].ToString()));
      }
      taken.push_back(refs[i]);
    }
    uint64_t freed = 0;
    shm::Allocator::TypeLookup types = TypesLocked();
    for (shm::Ref r : refs) {
      // The ledger no longer holds it: a failure here (a refcount already
      // zero: a scribbled header) is logged, and the census repairs it.
      absl::StatusOr<shm::ReleaseResult> rr = allocator_->Release(r, types);
      LogIfFailed(name_, rr.status(), "releasing a reference");
      if (rr.ok()) freed += rr->freed;
    }
    return freed;
  }());
}

absl::StatusOr<uint64_t> Channel::StoreRefs(
    const std::string& session_id, const std::vector<RefStore>& stores) {
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::StatusOr<uint64_t> {
    if (absl::Status s = UsableLocked(); !s.ok()) return s;
    absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
    if (!ledger.ok()) return ledger.status();
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
      if (++moves[st.value.bits()] > (*ledger)->Count(st.value)) {
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
          LogIfFailed(name_, allocator_->Release(stores[j].value, types).status(),
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
      intent.counts.push_back({r, (*ledger)->Count(r) - n});
    }
    if (absl::Status s = WriteStoreIntent(IntentPath(), intent); !s.ok()) {
      for (size_t j : retained) {
        LogIfFailed(name_, allocator_->Release(stores[j].value, types).status(),
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
      if (absl::Status s = (*ledger)->SetCount(c.ref, c.count); !s.ok()) {
        spdlog::error("channel '{}': StoreRefs: {}", name_, std::string(s.message()));
      }
    }
    RemoveStoreIntent(IntentPath());
    // Release what the fields held.
    uint64_t freed = 0;
    for (shm::Ref old : previous) {
      absl::StatusOr<shm::ReleaseResult> rr = allocator_->Release(old, types);
      LogIfFailed(name_, rr.status(), "releasing what a ref field held");
      if (rr.ok()) freed += rr->freed;
    }
    return freed;
  }());
}

absl::StatusOr<shm::Ref> Channel::SetRoot(const std::string& name,
                                          shm::Ref ref) {
  if (absl::Status s = ValidateRootName(name); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::StatusOr<shm::Ref> {
    if (absl::Status s = UsableLocked(); !s.ok()) return s;
    auto it = roots_.find(name);
    if (it == roots_.end() && max_roots_ != 0 && roots_.size() >= max_roots_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "root '", name, "': channel '", name_, "' already has ", roots_.size(),
          " roots, its limit (max_roots_per_channel; delete roots you no longer need, or "
          "raise it in the daemon's config)"));
    }
    if (absl::Status s = allocator_->Retain(ref); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("root '", name, "': ", s.message()));
    }
    shm::Ref previous;
    if (it != roots_.end()) previous = it->second;
    if (absl::Status s = store_->SetRoot(name, ref); !s.ok()) {
      // Not recorded: nothing changes.
      if (absl::Status r = allocator_->Release(ref, TypesLocked()).status(); !r.ok()) {
        spdlog::error("channel '{}': undoing root '{}': {}", name_, name, std::string(r.message()));
      }
      return s;
    }
    roots_[name] = ref;
    if (previous) {
      LogIfFailed(name_, allocator_->Release(previous, TypesLocked()).status(),
                  "releasing a replaced root");
    }
    return previous;
  }());
}

absl::StatusOr<RootEntry> Channel::GetRoot(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::StatusOr<RootEntry> {
    if (absl::Status s = UsableLocked(); !s.ok()) return s;
    auto it = roots_.find(name);
    if (it == roots_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "root '", name, "': not set in channel '", name_,
          "' (set it with SetRoot, or list roots with ListRoots)"));
    }
    RootEntry e{name, it->second, {}};
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(it->second);
    if (inst.ok()) {
      if (const RegisteredType* t = registry_.FindByIndex(inst->type_index())) {
        e.token = t->token;
      }
    }
    return e;
  }());
}

absl::Status Channel::DeleteRoot(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::Status {
    if (absl::Status s = UsableLocked(); !s.ok()) return s;
    auto it = roots_.find(name);
    if (it == roots_.end()) {
      return absl::NotFoundError(absl::StrCat("root '", name,
                                              "': not set in channel '", name_,
                                              "' (nothing to delete)"));
    }
    shm::Ref ref = it->second;
    if (absl::Status s = store_->DeleteRoot(name); !s.ok()) return s;
    roots_.erase(it);
    LogIfFailed(name_, allocator_->Release(ref, TypesLocked()).status(),
                "releasing a deleted root");
    return absl::OkStatus();
  }());
}

std::vector<RootEntry> Channel::ListRoots() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (arena_ == nullptr) {
    return {};
  }
  std::vector<RootEntry> out;
  for (const auto& [name, ref] : roots_) {
    RootEntry e{name, ref, {}};
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
    if (inst.ok()) {
      if (const RegisteredType* t = registry_.FindByIndex(inst->type_index())) {
        e.token = t->token;
      }
    }
    out.push_back(std::move(e));
  }
  return out;
}

bool Channel::MarkDropped() {
  std::lock_guard<std::mutex> lock(mu_);
  dropped_ = true;
  if (store_ == nullptr) return ledgers_.empty();
  if (absl::Status s = store_->MarkDropped(); !s.ok()) {
    // The drop holds for this run; a restart would bring the channel back.
    spdlog::error("channel '{}': dropped, but the drop could not be recorded ({}); if the "
                  "daemon restarts before the channel's sessions leave, drop it again",
                  name_, std::string(s.message()));
  }
  return ledgers_.empty();
}

bool Channel::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void Channel::Destroy() {
  std::lock_guard<std::mutex> lock(mu_);
  allocator_.reset();
  arena_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

ChannelStats Channel::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ChannelStats s;
  s.types = static_cast<uint32_t>(registry_.size());
  s.roots = static_cast<uint32_t>(roots_.size());
  s.sessions = static_cast<uint32_t>(ledgers_.size());
  s.sealed = registry_.sealed();
  s.dropped = dropped_;
  if (allocator_) s.alloc = allocator_->Stats();
  return s;
}

}  // namespace structd::server

namespace structd::server {

InstanceListing Channel::ListInstances(shm::TypeToken filter,
                                       uint32_t limit) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (arena_ == nullptr) {
    return {};
  }
  InstanceListing out;
  std::map<uint32_t, TypeCount> counts;
  shm::ForEachInstance(*arena_, [&](const shm::InstancePtr& inst) {
    uint32_t index = inst.type_index();
    const RegisteredType* t = registry_.FindByIndex(index);
    shm::TypeToken token = t ? t->token : shm::TypeToken{};
    if (!filter.is_zero() && token != filter) return true;
    TypeCount& c = counts[index];
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
                            InstanceView& out) const {
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
    FieldView fv;
    fv.name = f.name();
    fv.type = shm::FieldTypeName(f.spec);
    fv.value = shm::FormatFieldValue(f, *inst);
    if (f.kind() == shm::FieldKind::kRef && depth > 0) {
      shm::Ref target = shm::RefField(inst->payload() + f.offset).load();
      if (target && !seen.count(target.bits())) {
        fv.target = std::make_unique<InstanceView>();
        InspectLocked(target, depth - 1, seen, *fv.target);
      }
    }
    out.fields.push_back(std::move(fv));
  }
}

absl::StatusOr<InstanceView> Channel::Inspect(shm::Ref ref,
                                              uint32_t depth) const {
  if (depth > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "depth ", depth, ": at most 8 ref hops are followed (lower it)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  return GuardLocked([&]() -> absl::StatusOr<InstanceView> {
    if (absl::Status s = UsableLocked(); !s.ok()) return s;
    if (absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
        !inst.ok()) {
      return inst.status();
    }
    InstanceView view;
    std::set<uint64_t> seen;
    InspectLocked(ref, depth, seen, view);
    return view;
  }());
}

CheckReport Channel::Check() const {
  std::lock_guard<std::mutex> lock(mu_);
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
  // References that exist, by the instance they name.
  std::map<uint64_t, uint64_t> expected;
  for (const auto& [name, ref] : roots_) {
    if (!arena_->Resolve(ref).ok()) {
      report.problems.push_back(
          {ref, absl::StrCat("root '", name, "' names no live instance")});
      continue;
    }
    ++expected[ref.bits()];
  }
  for (const auto& [session, ledger] : ledgers_) {
    for (const LedgerEntry& e : ledger->Entries()) {
      if (!arena_->Resolve(e.ref).ok()) {
        report.problems.push_back(
            {e.ref, absl::StrCat("ledger of session ", session.substr(0, 8),
                                 " names no live instance")});
        continue;
      }
      expected[e.ref.bits()] += e.count;
    }
  }
  std::vector<std::pair<shm::Ref, uint32_t>> live;  // ref, refcount
  std::vector<shm::WalkProblem> walk =
      shm::ForEachInstance(*arena_, [&](const shm::InstancePtr& inst) {
        ++report.instances_checked;
        live.emplace_back(inst.ref(), inst.header().refcount.load());
        const RegisteredType* t = registry_.FindByIndex(inst.type_index());
        if (t == nullptr) {
          report.problems.push_back(
              {inst.ref(), absl::StrCat("type index ", inst.type_index(),
                                        " is not registered")});
          return true;
        }
        if (!inst.Fits(t->layout.size())) {
          report.problems.push_back(
              {inst.ref(), absl::StrCat("type '", t->key, "' (",
                                        t->layout.size(),
                                        " bytes) does not fit its block of ",
                                        inst.capacity())});
          return true;
        }
        for (uint32_t off : t->layout.ref_offsets()) {
          shm::Ref child = shm::RefField(inst.payload() + off).load();
          if (!child) continue;
          if (!arena_->Resolve(child).ok()) {
            report.problems.push_back(
                {inst.ref(), absl::StrCat("ref field at offset ", off,
                                          " names no live instance (",
                                          child.ToString(), ")")});
            continue;
          }
          ++expected[child.bits()];
        }
        return true;
      });
  for (const shm::WalkProblem& p : walk) report.problems.push_back({p.ref, p.what});
  for (const std::string& m : allocator_->DescriptorMismatches()) {
    report.problems.push_back({shm::Ref(), m});
  }
  for (const auto& [ref, refcount] : live) {
    uint64_t want = expected.count(ref.bits()) ? expected[ref.bits()] : 0;
    if (refcount != want) {
      report.problems.push_back(
          {ref, want == 0 ? absl::StrCat("leaked: refcount ", refcount,
                                         " but no reference to it exists")
                          : absl::StrCat("refcount ", refcount, ", but ", want,
                                         " references exist")});
    }
  }
  return report;
}

}  // namespace structd::server
