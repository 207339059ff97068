#include "structd/client/channel.h"

#include <cstdio>

#include "absl/strings/str_format.h"
#include "client/src/connection.h"
#include "client/src/move_record.h"
#include "client/src/deferred_refs.h"
#include "client/src/spare_instances.h"
#include "client/src/convert.h"

namespace structd::client {
static_assert(internal::SpareInstances::kSlots == internal::kFastTypeSlots,
              "Allocate<T> and View<T> share the per-type slot numbers");
namespace {

// At most this many refs or stores per call (the daemon's default limit).


}  // namespace

Channel::Channel(std::shared_ptr<internal::Connection> connection, std::string name,
                 std::string id, std::string capability)
    : connection_(std::move(connection)),
      name_(std::move(name)),
      id_(std::move(id)),
      capability_(std::move(capability)),
      spares_(std::make_unique<internal::SpareInstances>(
          [this](shm::TypeToken token, uint32_t count)
              -> absl::StatusOr<std::vector<internal::SpareInstances::Spare>> {
            // Into slots of the session's record when it has room: an
            // Owned of a spare may then be sent through a port without
            // a call.
            std::vector<uint32_t> held_in;
            absl::StatusOr<std::vector<shm::InstancePtr>> made =
                AllocateInstances(token, count, &held_in);
            if (!made.ok()) return made.status();
            std::vector<internal::SpareInstances::Spare> spares;
            spares.reserve(made->size());
            for (size_t i = 0; i < made->size(); ++i) spares.push_back({(*made)[i], held_in[i]});
            return spares;
          },
          // Spares were never in an Owned, so no queued operation names
          // them: no flush first.
          [this](const std::vector<Ref>& refs) { return ReleaseNow(refs); },
          /*background=*/true, [this](uint32_t slot) { GiveUpSlot(slot); })),
      deferred_(std::make_unique<internal::DeferredRefs>(
          [this](const std::vector<Ref>& refs) { return ApplyDeferred(true, refs); },
          [this](const std::vector<Ref>& refs) { return ApplyDeferred(false, refs); },
          [this] { return connection_->max_refs_per_call(); })) {}

Channel::~Channel() { spares_.reset(); }

shm::Arena& Channel::arena() const {
  base::MutexLock lock(&mu_);
  return *arena_;
}

absl::Status Channel::MapArena(uint64_t epoch) {
  std::string id;
  {
    base::MutexLock lock(&mu_);
    id = id_;
  }
  // The arena's files come from the daemon, as descriptors, never by path.
  std::weak_ptr<internal::Connection> weak = connection_;
  shm::ArenaFileSource source = [weak, id](shm::ArenaFile file)
      -> absl::StatusOr<base::UniqueFd> {
    std::shared_ptr<internal::Connection> c = weak.lock();
    if (c == nullptr) return absl::CancelledError("the client was closed");
    return c->FetchArenaFile(id, file);
  };
  absl::StatusOr<std::unique_ptr<shm::Arena>> arena = shm::Arena::OpenFrom(
      std::move(source), absl::StrCat("channel '", name_, "'"), shm::Access::kReadWrite);
  if (!arena.ok()) {
    return absl::Status(arena.status().code(),
                        absl::StrCat("channel '", name_, "': mapping its arena: ",
                                     arena.status().message()));
  }
  base::MutexLock lock(&mu_);
  if (arena_) retired_arenas_.push_back(std::move(arena_));
  arena_ = std::move(*arena);
  arena_epoch_ = epoch;
  ++arenas_mapped_;
  ResetFastTypesLocked();
  return absl::OkStatus();
}

uint32_t internal::NextFastTypeSlot() {
  static std::atomic<uint32_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void Channel::RememberFastType(uint32_t slot, const TypeInfo& type) {
  base::MutexLock lock(&mu_);
  // Only for the current types of the current arena: a View racing a
  // re-join must not cache what the re-join just threw away.
  auto it = types_by_key_.find(type.key);
  if (arena_ == nullptr || it == types_by_key_.end() || it->second.get() != &type ||
      fast_types_[slot].load(std::memory_order_relaxed) != nullptr) {
    return;
  }
  auto record = std::make_unique<const FastType>(
      FastType{shm::Arena::FastResolver::Of(*arena_),
               shm::TypedBlock::For(type.type_index, type.layout.size()), arenas_mapped_});
  fast_types_[slot].store(record.get(), std::memory_order_release);
  fast_type_records_.push_back(std::move(record));
}

void Channel::ResetFastTypesLocked() {
  for (auto& slot : fast_types_) slot.store(nullptr, std::memory_order_release);
  // Spares of the arena that is replaced are gone with it, and so is the
  // session's record (Moves() opens the new arena's).
  if (spares_) spares_->Forget();
  moves_.store(nullptr, std::memory_order_release);
}

absl::StatusOr<std::shared_ptr<Channel>> Channel::Join(
    std::shared_ptr<internal::Connection> connection, const std::string& channel,
    const std::string& capability) {
  std::shared_ptr<Channel> joined(new Channel(std::move(connection), channel, "", capability));
  if (absl::Status s = joined->Rejoin(); !s.ok()) return s;
  return joined;
}

absl::Status Channel::Rejoin() {
  v1::JoinChannelRequest request;
  {
    base::MutexLock lock(&mu_);
    request.set_channel(id_.empty() ? name_ : id_);
  }
  request.set_capability(capability_);
  v1::JoinChannelResponse response;
  if (absl::Status s = connection_->Call(connection_->registry(),
                                         &v1::Registry::Stub::JoinChannel, request,
                                         &response);
      !s.ok()) {
    return s;
  }
  {
    base::MutexLock lock(&mu_);
    if (id_.empty()) {  // the first join names the channel
      name_ = response.name();
      id_ = response.channel_id();
    }
    if (arena_ && response.arena().epoch() == arena_epoch_) return absl::OkStatus();
    // A different arena: types (and their indexes) start over too.
    types_by_key_.clear();
    ResetFastTypesLocked();
  }
  return MapArena(response.arena().epoch());
}

absl::StatusOr<TypeInfo> Channel::RegisterType(const std::string& key,
                                               std::vector<shm::FieldSpec> fields) {
  v1::RegisterTypeRequest request;
  request.set_channel(id_);
  request.set_key(key);
  for (const shm::FieldSpec& f : fields) {
    v1::FieldSpec* out = request.add_fields();
    out->set_name(f.name);
    out->set_type(shm::FieldTypeName(f));
  }
  v1::RegisterTypeResponse response;
  if (absl::Status s = connection_->Call(connection_->registry(),
                                         &v1::Registry::Stub::RegisterType, request,
                                         &response);
      !s.ok()) {
    return s;
  }
  return internal::TypeInfoFromProto(response.type());
}

absl::StatusOr<TypeInfo> Channel::DescribeType(shm::TypeToken token) {
  v1::DescribeTypeRequest request;
  request.set_channel(id_);
  request.set_token(token.ToHex());
  v1::DescribeTypeResponse response;
  if (absl::Status s = connection_->Call(connection_->registry(),
                                         &v1::Registry::Stub::DescribeType, request,
                                         &response);
      !s.ok()) {
    return s;
  }
  return internal::TypeInfoFromProto(response.type());
}

absl::StatusOr<std::vector<TypeInfo>> Channel::ListTypes() {
  v1::ListTypesRequest request;
  request.set_channel(id_);
  v1::ListTypesResponse response;
  if (absl::Status s = connection_->Call(connection_->registry(),
                                         &v1::Registry::Stub::ListTypes, request, &response);
      !s.ok()) {
    return s;
  }
  std::vector<TypeInfo> out;
  for (const v1::TypeInfo& t : response.types()) {
    absl::StatusOr<TypeInfo> info = internal::TypeInfoFromProto(t);
    if (!info.ok()) return info.status();
    out.push_back(std::move(*info));
  }
  return out;
}

absl::Status Channel::SealRegistry() {
  v1::SealRegistryRequest request;
  request.set_channel(id_);
  request.set_owner_capability(capability_);
  v1::SealRegistryResponse response;
  return connection_->Call(connection_->registry(), &v1::Registry::Stub::SealRegistry,
                           request, &response);
}

absl::StatusOr<std::shared_ptr<const TypeInfo>> Channel::UseType(std::string_view key_view,
                                          const absl::StatusOr<shm::Layout>& local,
                                          std::span<const uint32_t> offsets) {
  if (local.ok()) {
    base::MutexLock lock(&mu_);
    auto it = types_by_key_.find(key_view);
    if (it != types_by_key_.end() &&
        it->second->layout.fingerprint() == local->fingerprint()) {
      return it->second;
    }
  }
  const std::string key(key_view);
  if (!local.ok()) {
    return absl::Status(local.status().code(),
                        absl::StrCat("type '", key, "': ", local.status().message()));
  }
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (i >= local->fields().size() || local->fields()[i].offset != offsets[i]) {
      return absl::InternalError(absl::StrCat(
          "type '", key, "': compile-time offset of field ", i,
          " disagrees with shm::Layout (a structd bug: please report it)"));
    }
  }
  absl::StatusOr<std::vector<TypeInfo>> existing = ListTypes();
  if (!existing.ok()) return existing.status();
  std::optional<TypeInfo> found;
  for (TypeInfo& t : *existing) {
    if (t.key == key) found = std::move(t);
  }
  if (found && found->layout.fingerprint() != local->fingerprint()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "type '", key, "': this program's layout (fingerprint ",
        shm::FingerprintHex(local->fingerprint()), ")\n", local->ToString(),
        "differs from channel '", name_, "''s (token ", found->token.ToHex(),
        ", fingerprint ", shm::FingerprintHex(found->layout.fingerprint()), ")\n",
        found->layout.ToString(),
        "(build against the same struct definition, or use another key)"));
  }
  if (!found) {
    std::vector<shm::FieldSpec> fields;
    for (const shm::Field& f : local->fields()) fields.push_back(f.spec);
    absl::StatusOr<TypeInfo> registered = RegisterType(key, std::move(fields));
    if (!registered.ok()) return registered.status();
    found = std::move(*registered);
  }
  auto shared = std::make_shared<const TypeInfo>(std::move(*found));
  base::MutexLock lock(&mu_);
  types_by_key_.insert_or_assign(key, shared);
  return shared;
}

absl::StatusOr<std::vector<shm::InstancePtr>> Channel::AllocateInstances(
    shm::TypeToken token, uint32_t count, std::vector<uint32_t>* held_in) {
  v1::AllocateBatchRequest request;
  request.set_channel(id_);
  request.set_token(token.ToHex());
  request.set_count(count);
  // Only once the process uses ports (OpenPort opened the record): a
  // program without ports gets no record.
  internal::MoveRecord* moves =
      held_in != nullptr ? moves_.load(std::memory_order_acquire) : nullptr;
  const std::vector<uint32_t> slots =
      moves != nullptr ? moves->TakeFreeSlots(count) : std::vector<uint32_t>();
  for (uint32_t slot : slots) request.add_into_slots(slot);
  v1::AllocateBatchResponse response;
  if (absl::Status s = connection_->Call(connection_->instances(),
                                         &v1::Instances::Stub::AllocateBatch, request,
                                         &response);
      !s.ok()) {
    // A reply lost may still have filled them: free again once they read 0.
    if (moves != nullptr) moves->ReturnSlotsWhenEmpty(slots);
    return s;
  }
  const size_t first_held = held_in != nullptr ? held_in->size() : 0;
  if (held_in != nullptr) {
    for (int i = 0; i < response.refs_size(); ++i) {
      held_in->push_back(slots.empty() ? internal::kNoSlot
                                       : internal::SlotCode(moves->incarnation(), slots[i]));
    }
  }
  std::vector<shm::InstancePtr> out;
  out.reserve(response.refs_size());
  shm::Arena& a = arena();
  for (uint64_t bits : response.refs()) {
    absl::StatusOr<shm::InstancePtr> p = a.Resolve(Ref::FromBits(bits));
    if (!p.ok()) {
      std::vector<Ref> refs;
      for (uint64_t b : response.refs()) refs.push_back(Ref::FromBits(b));
      if (held_in != nullptr) {
        for (size_t i = first_held; i < held_in->size(); ++i) {
          if ((*held_in)[i] != internal::kNoSlot) GiveUpSlot((*held_in)[i]);
        }
        held_in->resize(first_held);
      }
      (void)Release(refs);
      return absl::Status(p.status().code(),
                          absl::StrCat("resolving a fresh allocation: ", p.status().message()));
    }
    out.push_back(*p);
  }
  return out;
}

size_t Channel::SpareCount() { return spares_->size(); }

size_t Channel::ReleaseSpares() { return spares_->ReleaseAll(); }

bool Channel::TakeSpare(uint32_t slot, shm::InstancePtr* out, uint32_t* held_in) {
  // A lost session's spares were released with its ledger.
  return connection_->session_ok() && spares_->TryTakeOne(slot, out, held_in);
}

void Channel::DropSole(uint32_t slot, const StructView& view, uint32_t held_in) {
  if (slot < internal::kFastTypeSlots && connection_->session_ok() && !connection_->closed()) {
    // The FastType record names the arena the instance must be in to go
    // into the stock: resolving through it also checks the view is of
    // that arena (an older one stays mapped) and of the stock's type.
    if (const FastType* f = fast_types_[slot].load(std::memory_order_acquire)) {
      shm::InstancePtr p;
      uint64_t* slot_word = nullptr;
      if (held_in != internal::kNoSlot) {
        internal::MoveRecord* moves = moves_.load(std::memory_order_acquire);
        if (moves != nullptr && internal::SlotIncarnation(held_in) == moves->incarnation()) {
          slot_word = moves->SlotWord(internal::SlotIndex(held_in));
        }
      }
      if ((held_in == internal::kNoSlot || slot_word != nullptr) &&
          f->arena.TryResolveTyped(view.ref(), f->block, &p) && p.block() == view.block_ &&
          spares_->TryRecycle(slot, f->arena_number, p, held_in, slot_word)) {
        return;
      }
    }
  }
  if (held_in != internal::kNoSlot) {
    DropSlot(held_in, view.ref());
  } else {
    DeferRelease(view.ref());
  }
}

absl::StatusOr<std::vector<shm::InstancePtr>> Channel::AllocateFor(
    uint32_t slot, const TypeInfo& type, uint32_t count, std::vector<uint32_t>* held_in) {
  if (slot >= internal::SpareInstances::kSlots) {
    return AllocateInstances(type.token, count, held_in);
  }
  if (!connection_->session_ok()) return connection_->session_status();
  // DropSole resolves through the FastType record: make sure there is one.
  RememberFastType(slot, type);
  // Recycling zeroes the payload: not for ref fields (freeing releases
  // what they hold) nor mutexes (they need initializing, and a holder's
  // robust list may still name one).
  const bool recyclable =
      type.layout.ref_offsets().empty() && type.layout.mutex_offsets().empty();
  internal::SpareInstances::Type stocked{type.token, type.type_index, type.layout.size(),
                                         recyclable, 0};
  {
    base::MutexLock lock(&mu_);
    stocked.arena = arenas_mapped_;
  }
  std::vector<shm::InstancePtr> out;
  out.reserve(count);
  if (absl::Status s = spares_->Take(slot, stocked, count, out, held_in); !s.ok()) return s;
  return out;
}

absl::StatusOr<shm::InstancePtr> Channel::ResolveAs(Ref ref, const TypeInfo& type) const {
  absl::StatusOr<shm::InstancePtr> p = arena().Resolve(ref);
  if (!p.ok()) return p.status();
  uint32_t index = p->type_index();
  if (index != type.type_index) {
    std::string other = absl::StrCat("type index ", index);
    {
      base::MutexLock lock(&mu_);
      for (const auto& [key, t] : types_by_key_) {
        if (t->type_index == index) other = absl::StrCat("'", key, "'");
      }
    }
    return absl::FailedPreconditionError(
        absl::StrCat("ref ", ref.ToString(), " is a ", other, ", not a '", type.key,
                     "' (view it as its own type)"));
  }
  if (!p->Fits(type.layout.size())) {
    return absl::DataLossError(absl::StrCat(
        "ref ", ref.ToString(), ": its block is smaller than a '", type.key,
        "' (the arena is damaged: run structctl check)"));
  }
  return p;
}

absl::StatusOr<shm::InstancePtr> Channel::ViewSlow(uint32_t slot, Ref ref,
                                                   const TypeInfo& type) {
  absl::StatusOr<shm::InstancePtr> p = ResolveAs(ref, type);
  if (!p.ok()) return p.status();
  if (slot < internal::kFastTypeSlots) RememberFastType(slot, type);
  return p;
}

absl::StatusOr<TypeInfo> Channel::Use(const DynamicStruct& type) {
  absl::StatusOr<std::shared_ptr<const TypeInfo>> info =
      UseType(type.key(), type.layout(), /*offsets=*/{});
  if (!info.ok()) return info.status();
  return **info;
}

absl::StatusOr<std::vector<Owned<DynamicView>>> Channel::AllocateBatch(
    const DynamicStruct& type, uint32_t count) {
  absl::StatusOr<std::shared_ptr<const TypeInfo>> info =
      UseType(type.key(), type.layout(), /*offsets=*/{});
  if (!info.ok()) return info.status();
  std::vector<uint32_t> held_in;
  absl::StatusOr<std::vector<shm::InstancePtr>> made =
      AllocateFor(type.slot(), **info, count, &held_in);
  if (!made.ok()) return made.status();
  std::vector<DynamicView> views;
  views.reserve(made->size());
  for (const shm::InstancePtr& p : *made) views.emplace_back(p, &type);
  return OwnAll(views, /*sole=*/true, &held_in);
}

absl::StatusOr<DynamicView> Channel::View(const DynamicStruct& type, Ref ref) {
  shm::InstancePtr p;
  if (TryViewFast(type.slot(), ref, &p)) return DynamicView(p, &type);
  absl::StatusOr<std::shared_ptr<const TypeInfo>> info =
      UseType(type.key(), type.layout(), /*offsets=*/{});
  if (!info.ok()) return info.status();
  absl::StatusOr<shm::InstancePtr> slow = ViewSlow(type.slot(), ref, **info);
  if (!slow.ok()) return slow.status();
  return DynamicView(*slow, &type);
}

absl::StatusOr<std::vector<Owned<DynamicView>>> Channel::RetainBatch(
    const DynamicStruct& type, std::span<const Ref> refs) {
  std::vector<DynamicView> views;
  views.reserve(refs.size());
  for (Ref r : refs) {
    absl::StatusOr<DynamicView> view = View(type, r);
    if (!view.ok()) return view.status();
    views.push_back(*view);
  }
  std::vector<uint32_t> held_in;
  if (absl::Status s =
          RetainViews(type.slot(), std::vector<StructView>(views.begin(), views.end()), &held_in);
      !s.ok()) {
    return s;
  }
  return OwnAll(views, /*sole=*/false, &held_in);
}

absl::Status Channel::CallRefs(bool retain, std::span<const Ref> refs, bool* sent) {
  auto call = [&](auto request, auto response, auto method) {
    request.set_channel(id_);
    for (Ref r : refs) request.add_refs(r.bits());
    return connection_->Call(connection_->instances(), method, request, &response, sent);
  };
  return retain ? call(v1::RetainRequest(), v1::RetainResponse(), &v1::Instances::Stub::Retain)
                : call(v1::ReleaseRequest(), v1::ReleaseResponse(),
                       &v1::Instances::Stub::Release);
}

absl::Status Channel::RetainRefs(const std::vector<Ref>& refs) {
  // In calls of at most max_refs_per_call; all or none: if a later call
  // fails, the references taken by the earlier ones are given back.
  const size_t per_call = connection_->max_refs_per_call();
  for (size_t begin = 0; begin < refs.size(); begin += per_call) {
    size_t end = std::min(refs.size(), begin + per_call);
    absl::Status s = CallRefs(true, std::span<const Ref>(refs).subspan(begin, end - begin));
    if (!s.ok()) {
      if (begin > 0) {  // best effort (not Release: no flush from here)
        (void)ReleaseNow(std::vector<Ref>(refs.begin(), refs.begin() + begin));
      }
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Channel::Release(const std::vector<Ref>& refs) {
  if (absl::Status s = Flush(); !s.ok()) return s;
  return ReleaseNow(refs);
}

absl::Status Channel::Flush() { return deferred_->Flush(); }

absl::Status Channel::ApplyDeferred(bool retain, const std::vector<Ref>& refs) {
  // The statuses DeferredRefs::Apply defines.
  if (!connection_->session_ok() || connection_->closed()) {
    return absl::FailedPreconditionError("the session ended: its references are gone");
  }
  bool sent = false;
  absl::Status s = CallRefs(retain, refs, &sent);
  if (s.ok()) return s;
  if (!sent) {  // the daemon did nothing: retry, unless the session is gone
    return absl::IsFailedPrecondition(s) ? s : absl::UnavailableError(s.message());
  }
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s) ||
      absl::IsUnknown(s) || absl::IsInternal(s)) {
    return absl::AbortedError(absl::StrCat("outcome unknown: ", s.message()));
  }
  return s;
}

absl::Status Channel::DeferRetain(Ref ref) {
  if (!connection_->session_ok()) return connection_->session_status();
  deferred_->Retain(ref);
  return absl::OkStatus();
}

void Channel::DeferRelease(Ref ref) {
  // If the session is gone, so is the reference: the daemon released
  // everything the session held; the queued release is dropped then.
  deferred_->Release(ref);
}

absl::Status Channel::ReleaseNow(const std::vector<Ref>& refs) {
  const size_t per_call = connection_->max_refs_per_call();
  for (size_t begin = 0; begin < refs.size(); begin += per_call) {
    size_t end = std::min(refs.size(), begin + per_call);
    if (absl::Status s = CallRefs(false, std::span<const Ref>(refs).subspan(begin, end - begin));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Channel::Store(RefStores& batch) {
  // The daemon's counts must include every queued retain before a move.
  if (absl::Status s = Flush(); !s.ok()) return s;
  for (size_t begin = 0; begin < batch.stores_.size(); begin += connection_->max_refs_per_call()) {
    v1::StoreRefsRequest request;
    request.set_channel(id_);
    size_t end = std::min(batch.stores_.size(), begin + connection_->max_refs_per_call());
    for (size_t i = begin; i < end; ++i) {
      const RefStores::Store& st = batch.stores_[i];
      v1::RefStore* out = request.add_stores();
      out->set_target(st.target.bits());
      out->set_field(st.field);
      out->set_value(st.value.bits());
      out->set_move(st.move);
    }
    v1::StoreRefsResponse response;
    if (absl::Status s = connection_->Call(connection_->instances(),
                                           &v1::Instances::Stub::StoreRefs, request,
                                           &response);
        !s.ok()) {
      return s;
    }
  }
  for (auto& disown : batch.moved_) disown();
  batch.stores_.clear();
  batch.moved_.clear();
  return absl::OkStatus();
}

absl::Status Channel::SetRoot(const std::string& name, Ref ref) {
  v1::SetRootRequest request;
  request.set_channel(id_);
  request.set_name(name);
  request.set_ref(ref.bits());
  v1::SetRootResponse response;
  return connection_->Call(connection_->instances(), &v1::Instances::Stub::SetRoot, request,
                           &response);
}

absl::StatusOr<Ref> Channel::GetRoot(const std::string& name) {
  v1::GetRootRequest request;
  request.set_channel(id_);
  request.set_name(name);
  v1::GetRootResponse response;
  if (absl::Status s = connection_->Call(connection_->instances(),
                                         &v1::Instances::Stub::GetRoot, request, &response);
      !s.ok()) {
    return s;
  }
  return Ref::FromBits(response.ref());
}

absl::Status Channel::DeleteRoot(const std::string& name) {
  v1::DeleteRootRequest request;
  request.set_channel(id_);
  request.set_name(name);
  v1::DeleteRootResponse response;
  return connection_->Call(connection_->instances(), &v1::Instances::Stub::DeleteRoot,
                           request, &response);
}

absl::StatusOr<std::vector<RootInfo>> Channel::ListRoots() {
  v1::ListRootsRequest request;
  request.set_channel(id_);
  v1::ListRootsResponse response;
  if (absl::Status s = connection_->Call(connection_->instances(),
                                         &v1::Instances::Stub::ListRoots, request, &response);
      !s.ok()) {
    return s;
  }
  std::vector<RootInfo> out;
  for (const v1::Root& r : response.roots()) {
    out.push_back({r.name(), Ref::FromBits(r.ref()),
                   shm::TypeToken::FromHex(r.token()).value_or(shm::TypeToken())});
  }
  return out;
}

absl::Status Channel::BindErased(shm::TypeToken token, std::type_index table_type,
                                 std::shared_ptr<const void> table) {
  if (connection_->bindings_sealed.load()) {
    return absl::FailedPreconditionError(
        "Bind: this process sealed its behavior bindings (Client::SealBindings); "
        "bind every table before sealing");
  }
  absl::StatusOr<TypeInfo> type = DescribeType(token);
  if (!type.ok()) return type.status();
  if (type->type_index > internal::BehaviorTable::kMaxTypeIndex) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Bind: type '", type->key, "' has index ", type->type_index,
        "; behavior tables cover indexes up to ", internal::BehaviorTable::kMaxTypeIndex));
  }
  behaviors_.Set(type->type_index,
                 std::make_unique<internal::BoundTable>(internal::BoundTable{
                     table_type, std::move(table), type->key, type->token}));
  return absl::OkStatus();
}

absl::Status Channel::NoBehavior(const StructView& view, const internal::BoundTable* bound,
                                 const char* wanted) const {
  if (!view) return absl::FailedPreconditionError("behavior: the view is empty");
  if (bound != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the behavior bound for type '", bound->key, "' (token ", bound->token.ToHex(),
        ") in this process is a ", bound->table_type.name(), ", not a ", wanted,
        " (call the table type that was bound)"));
  }
  uint32_t index = view.type_index();
  if (index == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "behavior: ref ", view.ref().ToString(), " names a freed instance"));
  }
  std::string name = absl::StrCat("with index ", index);
  {
    base::MutexLock lock(&mu_);
    for (const auto& [key, t] : types_by_key_) {
      if (t->type_index == index) name = absl::StrCat("'", key, "' (token ", t->token.ToHex(), ")");
    }
  }
  if (name.starts_with("with")) {
    // Not used by this process yet: ask the registry (error path only).
    absl::StatusOr<std::vector<TypeInfo>> types =
        const_cast<Channel*>(this)->ListTypes();
    if (types.ok()) {
      for (const TypeInfo& t : *types) {
        if (t.type_index == index) name = absl::StrCat("'", t.key, "' (token ", t.token.ToHex(), ")");
      }
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no behavior bound for type ", name, " in this process (Bind a table to it first)"));
}

}  // namespace structd::client
