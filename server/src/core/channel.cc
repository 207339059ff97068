#include "core/channel.h"

#include <signal.h>

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
#include "core/private_dir.h"
#include "structd/base/posix.h"
#include "core/random.h"
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

}  // namespace

void Channel::LogIfFailed(const absl::Status& s, std::string_view what) const {
  if (s.ok()) return;
  spdlog::error("channel '{}': {}: {} (refcounts are repaired at the next start; run "
                "'structctl check {}')",
                name_, what, s.ToString(), name_);
}

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

absl::StatusOr<std::unique_ptr<Channel>> Channel::Create(const Options& options,
                                                         IssuedCapabilities* issued) {
  if (absl::Status s = ValidateChannelName(options.name); !s.ok()) return s;
  std::unique_ptr<Channel> c(new Channel());
  c->id_ = options.id;
  c->name_ = options.name;
  c->dir_ = options.dir;
  issued->owner = RandomHex128();
  issued->member = RandomHex128();
  c->owner_capability_ = SecretDigest::Of(issued->owner);
  c->member_capability_ = SecretDigest::Of(issued->member);
  c->created_unix_ms_ = base::NowUnixMs();
  c->creator_uid_ = options.creator_uid;
  c->arena_memfd_ = options.memfd_store != nullptr;
  // Not shared yet; locked so the guarded members are set under mu_.
  base::MutexLock lock(&c->mu_);
  c->registry_ = TypeRegistry(options.limits.layout, options.limits.registry);
  c->max_roots_ = options.limits.max_roots;
  std::error_code ec;
  std::vector<std::string> dirs = {options.dir, options.dir + "/ledgers"};
  if (options.memfd_store == nullptr) dirs.push_back(options.dir + "/arena");
  for (const std::string& d : dirs) {
    if (absl::Status s = MakePrivateDir(d); !s.ok()) {
      std::filesystem::remove_all(options.dir, ec);
      return absl::InternalError(absl::StrCat("channel '", options.name, "': ", s.message()));
    }
  }
  absl::StatusOr<std::unique_ptr<shm::Arena>> arena =
      options.memfd_store == nullptr
          ? shm::Arena::Create(options.dir + "/arena", options.arena)
          : shm::Arena::Create(
                std::make_unique<shm::SealedMemoryStorage>(
                    options.id, ChannelArenaNames(options.id).KeeperFor(options.memfd_store)),
                options.arena);
  if (!arena.ok()) {
    std::filesystem::remove_all(options.dir, ec);
    return arena.status();
  }
  absl::StatusOr<std::unique_ptr<shm::Allocator>> alloc =
      shm::Allocator::Adopt(arena->get());
  if (!alloc.ok()) {
    (*arena)->RemoveFiles();
    std::filesystem::remove_all(options.dir, ec);
    return alloc.status();
  }
  c->arena_ = std::move(*arena);
  c->allocator_ = std::move(*alloc);
  ChannelMeta meta;
  meta.id = c->id_;
  meta.name = c->name_;
  meta.owner_capability = c->owner_capability_;
  meta.member_capability = c->member_capability_;
  meta.created_unix_ms = c->created_unix_ms_;
  meta.creator_uid = c->creator_uid_;
  meta.arena = c->arena_->identity();
  meta.arena_memfd = options.memfd_store != nullptr;
  absl::StatusOr<std::unique_ptr<MetaStore>> store = MetaStore::Create(options.dir, meta);
  if (!store.ok()) {
    c->arena_->RemoveFiles();
    std::filesystem::remove_all(options.dir, ec);
    return absl::Status(store.status().code(),
                        absl::StrCat("channel '", options.name, "': ", store.status().message()));
  }
  c->store_ = std::move(*store);
  return c;
}

uint64_t Channel::arena_bytes() const {
  base::MutexLock lock(&mu_);
  if (arena_ == nullptr) return 0;
  return uint64_t{arena_->extent_count()} * arena_->extent_size();
}

uint32_t Channel::arena_descriptor_files() const {
  base::MutexLock lock(&mu_);
  if (!arena_memfd_ || arena_ == nullptr) return 0;
  return 1 + arena_->extent_count();
}

absl::StatusOr<base::UniqueFd> Channel::OpenArenaFile(shm::ArenaFile file) const {
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  if (file.extent != shm::ArenaFile::kHeader &&
      (file.extent < 0 || static_cast<uint32_t>(file.extent) >= arena_->extent_count())) {
    return absl::NotFoundError(absl::StrFormat(
        "channel '%s': extent %d is not published (the arena has %d; ask for an extent below "
        "ArenaHeader.extent_count)",
        name_, file.extent, arena_->extent_count()));
  }
  // A new descriptor of the daemon's own file (by its path, or a fresh
  // open of its memfd): never one a client handed in, never shared.
  return arena_->OpenFile(file);
}

size_t Channel::RestoreFileSizes() {
  base::MutexLock lock(&mu_);
  if (arena_ == nullptr) return 0;
  std::vector<shm::Arena::SizeRepair> repairs = arena_->RestoreFileSizes();
  file_size_repairs_ += repairs.size();
  for (const shm::Arena::SizeRepair& r : repairs) {
    std::string file =
        r.extent == shm::ArenaFile::kHeader ? "the arena header" : absl::StrCat("extent ", r.extent);
    if (r.shrunk) {
      spdlog::error(
          "channel '{}': {} was cut to {} bytes through a member's descriptor; restored to full "
          "size (what was cut off reads as zeros). The channel answers DATA_LOSS until the "
          "daemon restarts and repairs it",
          name_, file, r.found_bytes);
    } else {
      spdlog::warn(
          "channel '{}': {} was grown through a member's descriptor ({} bytes, {} allocated); "
          "trimmed back, freeing the growth (a member may not take memory past the quotas)",
          name_, file, r.found_bytes, r.allocated_bytes);
    }
  }
  return repairs.size();
}

void Channel::SetGrowthGate(shm::Allocator::GrowthGate gate) {
  base::MutexLock lock(&mu_);
  if (allocator_ != nullptr) allocator_->SetGrowthGate(std::move(gate));
}

absl::Status Channel::Usable() const {
  base::MutexLock lock(&mu_);
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
  base::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [session, ledger] : ledgers_) out.push_back(session);
  return out;
}

absl::StatusOr<Role> Channel::CheckCapability(
    const std::string& capability) const {
  if (owner_capability_.Matches(capability)) return Role::kOwner;
  if (member_capability_.Matches(capability)) return Role::kMember;
  return absl::PermissionDeniedError(absl::StrCat(
      "channel '", name_,
      "': wrong capability (use the owner or member capability that "
      "CreateChannel returned)"));
}

absl::Status Channel::Join(const std::string& session_id) {
  base::MutexLock lock(&mu_);
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

bool SessionProcess::Exited() const {
  if (handle != nullptr) return handle->Exited();
  return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH;
}

uint64_t Channel::ReapClaims() {
  base::MutexLock lock(&mu_);
  if ((left_claims_.empty() && left_records_.empty()) || !UsableLocked().ok()) return 0;
  uint64_t freed = 0;
  // One at a time, the others staying in left_records_: a recount while
  // one ends must count what the others' slots hold. Still moving:
  // EndRecordLocked puts it back at the end.
  for (size_t n = left_records_.size(); n > 0; --n) {
    const LeftRecord left = left_records_.front();
    left_records_.erase(left_records_.begin());
    freed += EndRecordLocked(left.record, left.process);
  }
  shm::Allocator::TypeLookup types = TypesLocked();
  std::vector<LeftClaim> waiting;
  for (const LeftClaim& c : left_claims_) {
    if (!c.process.Exited()) {
      waiting.push_back(c);
      continue;
    }
    absl::StatusOr<shm::InstancePtr> now = arena_->ResolveCurrent(c.ref);
    if (now.ok() && now->ref() == c.ref &&
        now->header().refcount.load(std::memory_order_acquire) == 0) {
      absl::Status s = allocator_->FinishCondemned(c.ref, types).status();
      LogIfFailed(s, "freeing a block an ended session left claimed");
      if (s.ok()) ++freed;
    } else if (now.ok()) {
      // Its process finished the recycle after its session ended: an
      // instance nothing references, freed by the census at the next start.
      spdlog::warn("channel '{}': {} was recycled after its session ended; the census of the "
                   "next start frees it",
                   name_, now->ref().ToString());
    }
  }
  left_claims_ = std::move(waiting);
  return freed;
}

uint64_t Channel::Leave(const std::string& session_id, const SessionProcess& process) {
  base::MutexLock lock(&mu_);
  auto it = ledgers_.find(session_id);
  if (it == ledgers_.end()) return 0;
  uint64_t released = 0;
  if (UsableLocked().ok()) {
    for (const LedgerEntry& e : it->second->Entries()) {
      released += ReleaseEndedHoldingLocked(e.ref, e.count, session_id, process);
    }
  }
  // The ledger goes before the record ends: a recount there must not
  // count the entries released above.
  const shm::Ref record = it->second->record();
  const uint32_t record_tag = it->second->record_tag();
  it->second->Unlink();
  ledgers_.erase(it);
  if (ledgers_.empty()) unused_since_ = std::chrono::steady_clock::now();
  if (UsableLocked().ok() && !record.is_null()) {
    if (absl::StatusOr<shm::SessionRecord> view = RecordViewLocked(record); view.ok()) {
      released += EndRecordLocked(HeldRecord{session_id, record, record_tag, *view}, process);
    } else {
      spdlog::warn("channel '{}': the record {} of session {} is gone ({}): what its slots "
                   "held is left to the census",
                   name_, record.ToString(), session_id.substr(0, 8),
                   std::string(view.status().message()));
    }
  }
  return released;
}


uint64_t Channel::ReleaseEndedHoldingLocked(shm::Ref ref, uint64_t count,
                                            const std::string& session,
                                            const SessionProcess& process) {
  // The holding names a block; the session may have recycled the instance
  // there in place (shm/local_recycle.h), and may have died doing it,
  // between its claim (refcount 0) and its publication (refcount 1):
  // either way the instance there now is the one it owned. A ref that no
  // longer resolves was damaged by a member: logged.
  absl::StatusOr<shm::InstancePtr> current = arena_->ResolveCurrent(ref);
  const shm::Allocator::TypeLookup types = TypesLocked();
  if (current.ok() && current->header().refcount.load(std::memory_order_acquire) == 0) {
    if (!process.Exited()) {
      spdlog::info("channel '{}': session {} ended while its process was recycling {} "
                   "in place: freed once the process has exited",
                   name_, session.substr(0, 8), current->ref().ToString());
      left_claims_.push_back({current->ref(), process});
      return 0;
    }
    absl::Status s = allocator_->FinishCondemned(current->ref(), types).status();
    LogIfFailed(s, "freeing what an ended session was recycling");
    return s.ok() ? 1 : 0;
  }
  uint64_t released = 0;
  for (uint64_t n = 0; n < count; ++n) {
    absl::Status s = current.ok() ? allocator_->Release(current->ref(), types).status()
                                  : current.status();
    if (!s.ok()) {
      LogIfFailed(s, "releasing what an ended session held");
      break;
    }
    ++released;
  }
  return released;
}

bool Channel::HasSession(const std::string& session_id) const {
  base::MutexLock lock(&mu_);
  return ledgers_.count(session_id) != 0;
}

size_t Channel::session_count() const {
  base::MutexLock lock(&mu_);
  return ledgers_.size();
}

uint64_t Channel::RefsHeld(const std::string& session_id) const {
  base::MutexLock lock(&mu_);
  auto it = ledgers_.find(session_id);
  if (it == ledgers_.end()) return 0;
  uint64_t held = it->second->size();
  // And what its record's slots hold (received messages, spares).
  if (!it->second->record().is_null() && UsableLocked().ok()) {
    if (absl::StatusOr<shm::SessionRecord> view = RecordViewLocked(it->second->record());
        view.ok()) {
      for (uint32_t i = 0; i < shm::kRecordSlots; ++i) {
        if (std::atomic_ref<uint64_t>(*view->slot(i)).load(std::memory_order_relaxed) != 0) ++held;
      }
    }
  }
  return held;
}

ArenaSummary Channel::arena_summary() const {
  base::MutexLock lock(&mu_);
  ArenaSummary a;
  if (arena_ == nullptr) return a;  // destroyed after a drop
  a.extent_size = arena_->extent_size();
  a.max_extents = arena_->max_extents();
  a.extent_count = arena_->extent_count();
  a.format_version = arena_->format_version();
  a.epoch = arena_->epoch();
  return a;
}

shm::Allocator::TypeLookup Channel::TypesLocked() const {
  // Called back by the Allocator within the caller's critical section.
  const TypeRegistry* registry = &registry_;
  return [registry](uint32_t index) -> const shm::Layout* {
    const RegisteredType* t = registry->FindByIndex(index);
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
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  return RegisterLocked(key, std::move(fields), TypeRegistry::Origin::kUser);
}

absl::StatusOr<TypeRegistry::RegisterResult> Channel::RegisterLocked(
    const std::string& key, std::vector<shm::FieldSpec> fields, TypeRegistry::Origin origin) {
  absl::StatusOr<TypeRegistry::RegisterResult> r =
      registry_.Register(key, std::move(fields), origin);
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

absl::StatusOr<shm::Ref> Channel::AllocateBuiltinLocked(
    const std::string& key, std::vector<shm::FieldSpec> fields, const std::string& what,
    absl::FunctionRef<absl::Status(void* payload, size_t bytes)> format) {
  absl::StatusOr<TypeRegistry::RegisterResult> type =
      RegisterLocked(key, std::move(fields), TypeRegistry::Origin::kBuiltin);
  if (!type.ok()) return type.status();
  std::vector<shm::Ref> refs;
  if (absl::Status s = allocator_->AllocateBatch(type.value().type->type_index,
                                                 type.value().type->layout, 1, refs);
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
  }
  absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(refs.front());
  absl::Status formatted =
      inst.ok() ? format(inst->payload(), type.value().type->layout.size()) : inst.status();
  if (!formatted.ok()) {
    LogIfFailed(allocator_->Release(refs.front(), TypesLocked()).status(),
                absl::StrCat("dropping a ", what, " that could not be formatted"));
    return formatted;
  }
  return refs.front();
}

absl::StatusOr<RegisteredType> Channel::DescribeType(
    shm::TypeToken token) const {
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<const RegisteredType*> t = registry_.Find(token);
  if (!t.ok()) return t.status();
  return **t;
}

std::vector<RegisteredType> Channel::ListTypes(bool* sealed) const {
  base::MutexLock lock(&mu_);
  if (arena_ == nullptr) {
    return {};
  }
  std::vector<RegisteredType> out;
  for (const RegisteredType* t : registry_.List()) out.push_back(*t);
  if (sealed) *sealed = registry_.sealed();
  return out;
}

absl::Status Channel::Seal() {
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  if (registry_.sealed()) return absl::OkStatus();
  if (absl::Status s = store_->Seal(); !s.ok()) return s;
  registry_.Seal();
  return absl::OkStatus();
}

absl::StatusOr<shm::Ref> Channel::SetRoot(const std::string& name,
                                          shm::Ref ref) {
  if (absl::Status s = ValidateRootName(name); !s.ok()) return s;
  base::MutexLock lock(&mu_);
  return GuardLocked(SetRootLocked(name, ref));
}

absl::StatusOr<shm::Ref> Channel::SetRootLocked(const std::string& name,
                                          shm::Ref ref) {
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
    LogIfFailed(allocator_->Release(previous, TypesLocked()).status(),
                "releasing a replaced root");
  }
  return previous;
}

absl::StatusOr<RootEntry> Channel::GetRoot(const std::string& name) const {
  base::MutexLock lock(&mu_);
  return GuardLocked(GetRootLocked(name));
}

absl::StatusOr<RootEntry> Channel::GetRootLocked(const std::string& name) const {
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
}

absl::Status Channel::DeleteRoot(const std::string& name) {
  base::MutexLock lock(&mu_);
  return GuardLocked(DeleteRootLocked(name));
}

absl::Status Channel::DeleteRootLocked(const std::string& name) {
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
  LogIfFailed(allocator_->Release(ref, TypesLocked()).status(),
              "releasing a deleted root");
  return absl::OkStatus();
}

std::vector<RootEntry> Channel::ListRoots() const {
  base::MutexLock lock(&mu_);
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

bool Channel::MarkDroppedIfUnusedFor(std::chrono::steady_clock::duration unused) {
  base::MutexLock lock(&mu_);
  if (!ledgers_.empty() || dropped_ ||
      std::chrono::steady_clock::now() - unused_since_ < unused) {
    return false;
  }
  MarkDroppedLocked();
  return true;
}

bool Channel::MarkDropped() {
  base::MutexLock lock(&mu_);
  return MarkDroppedLocked();
}

bool Channel::MarkDroppedLocked() {
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


void Channel::Destroy() {
  base::MutexLock lock(&mu_);
  allocator_.reset();
  if (arena_ != nullptr) arena_->RemoveFiles();
  arena_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

ChannelStats Channel::Stats() const {
  base::MutexLock lock(&mu_);
  ChannelStats s;
  s.types = static_cast<uint32_t>(registry_.size());
  s.roots = static_cast<uint32_t>(roots_.size());
  s.sessions = static_cast<uint32_t>(ledgers_.size());
  s.sealed = registry_.sealed();
  s.dropped = dropped_;
  if (allocator_) s.alloc = allocator_->Stats();
  for (const RegisteredType* t : registry_.List()) {
    TypeLive live{t->key, 0, 0};
    if (allocator_) {
      if (auto it = allocator_->LiveByType().find(t->type_index);
          it != allocator_->LiveByType().end()) {
        live.instances = it->second.instances;
        live.bytes = it->second.bytes;
      }
    }
    if (t->key == shm::SessionRecord::TypeKey()) {
      s.session_records = static_cast<uint32_t>(live.instances);
    }
    s.by_type.push_back(std::move(live));
  }
  s.file_size_repairs = file_size_repairs_;
  return s;
}

}  // namespace structd::server
