#ifndef STRUCTD_CLIENT_CHANNEL_H_
#define STRUCTD_CLIENT_CHANNEL_H_

// A channel this process has joined: its mapped arena, its type registry,
// instances, roots and this process's behavior tables for its types.
// Obtained from Client::CreateChannel or Client::Join; thread-safe.

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <span>
#include <string_view>
#include <string>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/base/thread_annotations.h"
#include "structd/base/mutex.h"
#include "absl/strings/str_cat.h"
#include "structd/client/behavior.h"
#include "structd/client/dynamic.h"
#include "structd/client/owned.h"
#include "structd/client/struct.h"
#include "structd/shm/arena.h"
#include "structd/shm/layout.h"
#include "structd/shm/port_ring.h"
#include "structd/shm/type_token.h"

namespace structd::client {

namespace internal {
class Connection;
class DeferredRefs;
class MoveRecord;
class SpareInstances;

// A small number per C++ struct type that Channel::View<T> has seen, for
// its per-type cache (the first kFastTypeSlots types of a program).
inline constexpr uint32_t kFastTypeSlots = 64;
uint32_t NextFastTypeSlot();
// T's slot once assigned, else kNoFastTypeSlot. Constant-initialized, so
// a View<T> during another file's static initialization sees "not yet"
// rather than slot 0 (another type's record); assigned once, by
// AssignFastTypeSlot.
inline constexpr uint32_t kNoFastTypeSlot = ~uint32_t{0};
template <typename T>
inline std::atomic<uint32_t> fast_type_slot{kNoFastTypeSlot};
template <typename T>
[[gnu::noinline]] uint32_t AssignFastTypeSlot() {
  static const uint32_t slot = NextFastTypeSlot();  // one per type, thread-safe
  fast_type_slot<T>.store(slot, std::memory_order_relaxed);
  return slot;
}
// On View<T>'s hot path: one load and a branch, inlined (a call to a
// function with a guarded static cost about a nanosecond per view).
template <typename T>
inline uint32_t FastTypeSlot() {
  const uint32_t slot = fast_type_slot<T>.load(std::memory_order_relaxed);
  if (slot != kNoFastTypeSlot) [[likely]] return slot;
  return AssignFastTypeSlot<T>();
}
// The slot of `view`'s type: the C++ type's, or a run-time type's own
// (DynamicView::fast_slot).
template <typename T>
uint32_t SlotOf(const T& view) {
  if constexpr (requires { view.fast_slot(); }) {
    return view.fast_slot();
  } else {
    return FastTypeSlot<T>();
  }
}
}

struct TypeInfo {
  std::string key;
  shm::TypeToken token;
  uint32_t type_index = 0;  // the value in instance headers
  shm::Layout layout;
};

struct RootInfo {
  std::string name;
  Ref ref;
  shm::TypeToken token;
};

// A port (doc/ports.md) and its counters, each read atomically.
struct PortInfo {
  std::string name;  // the root that names it
  Ref ref;
  uint32_t capacity = 0;
  uint64_t depth = 0;     // messages in it
  uint64_t sent = 0;      // since creation
  uint64_t received = 0;  // since creation
  uint32_t receivers_waiting = 0;
  uint32_t senders_waiting = 0;
};

// A batch of stores into ref fields, applied by Channel::Store in one call
// (all or none).
class RefStores {
 public:
  // The field takes over `value`'s reference (the Owned is emptied when
  // the batch is applied successfully).
  template <typename T, typename U>
  void Move(RefTo<T> field, Owned<U>& value) {
    // From here the reference may be the field's (a call whose reply is
    // lost still moved it): the Owned's own, out of any clone group, and
    // never recycled in place.
    value.Unshare();
    value.LeaveSlot();
    value.sole_ = false;
    Add(field.owner(), field.field_index(), value.ref(), true);
    moved_.push_back([&value] { (void)value.Disown(); });
  }
  // The field gets a new reference to `value` (any live ref).
  template <typename T>
  void Copy(RefTo<T> field, Ref value) {
    Add(field.owner(), field.field_index(), value, false);
  }
  template <typename T>
  void Clear(RefTo<T> field) {
    Add(field.owner(), field.field_index(), Ref(), false);
  }
  size_t size() const { return stores_.size(); }

 private:
  friend class Channel;
  struct Store {
    Ref target;
    uint32_t field;
    Ref value;
    bool move;
  };
  void Add(Ref target, uint32_t field, Ref value, bool move) {
    stores_.push_back({target, field, value, move});
  }
  std::vector<Store> stores_;
  std::vector<std::function<void()>> moved_;
};

template <typename T>
class Port;

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Fixed once the Channel is handed out.
  const std::string& name() const { return name_; }
  const std::string& id() const { return id_; }
  // The arena, mapped read-write. Extents are mapped on first use.
  shm::Arena& arena() const;

  // ---- Types ----
  // Registers `key` with `fields`, or meets the same key registered with an
  // identical layout (same token). FAILED_PRECONDITION naming both layouts
  // if the layouts differ, or if the registry is sealed.
  absl::StatusOr<TypeInfo> RegisterType(const std::string& key,
                                        std::vector<shm::FieldSpec> fields);
  absl::StatusOr<TypeInfo> DescribeType(shm::TypeToken token);
  absl::StatusOr<std::vector<TypeInfo>> ListTypes();
  // Owner only: every later RegisterType fails.
  absl::Status SealRegistry();

  // The channel's type for the C++ struct T (see struct.h): found by key
  // and checked by fingerprint, or registered if absent. A layout mismatch
  // is FAILED_PRECONDITION naming both layouts. Cached after the first call.
  template <typename T>
  absl::StatusOr<TypeInfo> Use() {
    absl::StatusOr<std::shared_ptr<const TypeInfo>> type = UseShared<T>();
    if (!type.ok()) return type.status();
    return **type;
  }

  // ---- Instances ----
  // A zero-filled instance of T. In the common case no call to the daemon:
  // it comes from this process's stock of instances of T that the session
  // already owns, refilled in batches by a background thread
  // (doc/lifecycle.md, "Allocate"). A process allocates ahead up to
  // 256 KiB of blocks (and 4,096 instances) per type, and recycled drops
  // may double that; they count as the
  // session's in `structctl sessions`, and are given back when the Channel
  // is destroyed, when an allocation would otherwise fail for want of
  // memory, or at the session's end.
  template <typename T>
  absl::StatusOr<Owned<T>> Allocate() {
    shm::InstancePtr spare;
    uint32_t held_in = internal::kNoSlot;
    if (TakeSpare(internal::FastTypeSlot<T>(), &spare, &held_in)) {
      return Owned<T>(shared_from_this(), T(spare), /*sole=*/true, held_in);
    }
    absl::StatusOr<std::vector<Owned<T>>> one = AllocateBatch<T>(1);
    if (!one.ok()) return one.status();
    return std::move((*one)[0]);
  }
  // `count` zero-filled instances, all or none: from the stock if it holds
  // enough, else in one call to the daemon.
  template <typename T>
  absl::StatusOr<std::vector<Owned<T>>> AllocateBatch(uint32_t count) {
    absl::StatusOr<std::shared_ptr<const TypeInfo>> type = UseShared<T>();
    if (!type.ok()) return type.status();
    std::vector<uint32_t> held_in;
    absl::StatusOr<std::vector<shm::InstancePtr>> made =
        AllocateFor(internal::FastTypeSlot<T>(), **type, count, &held_in);
    if (!made.ok()) return made.status();
    return OwnAll(std::vector<T>(made->begin(), made->end()), /*sole=*/true, &held_in);
  }
  // Instances this process holds in stock for Allocate (owned by its
  // session, not handed out yet), over all types.
  size_t SpareCount();
  // Gives the whole stock back to the daemon now (Release calls); returns
  // how many. Allocate builds a stock again when it is next used.
  size_t ReleaseSpares();
  // A view of `ref` as a T, without an RPC once T is known: INVALID_ARGUMENT
  // for a malformed ref, NOT_FOUND for a stale one, FAILED_PRECONDITION if
  // the instance is of another type. The view owns nothing.
  //
  // The common case (T seen before, the ref valid, its extent mapped) takes
  // no lock, no map lookup and no refcount: one cached record per T and a
  // few loads (shm::Arena::TryResolveTyped).
  template <typename T>
  absl::StatusOr<T> View(Ref ref) {
    const uint32_t slot = internal::FastTypeSlot<T>();
    shm::InstancePtr p;
    if (TryViewFast(slot, ref, &p)) return T(p);
    absl::StatusOr<std::shared_ptr<const TypeInfo>> type = UseShared<T>();
    if (!type.ok()) return type.status();
    absl::StatusOr<shm::InstancePtr> slow = ViewSlow(slot, ref, **type);
    if (!slow.ok()) return slow.status();
    return T(*slow);
  }
  // Takes a reference of this session's own to `ref`.
  template <typename T>
  absl::StatusOr<Owned<T>> Retain(Ref ref) {
    absl::StatusOr<std::vector<Owned<T>>> one = RetainBatch<T>(std::span<const Ref>(&ref, 1));
    if (!one.ok()) return one.status();
    return std::move((*one)[0]);
  }
  // A reference of this session's own to each of `refs` (all of type T),
  // all or none. How a process takes over instances another process hands
  // it. No call in the common case: each count is raised in shared memory
  // and the reference kept in the session record (doc/lifecycle.md,
  // "Retain"); the rest (no record, no free slot, a stale ref: its error)
  // in one call per 100,000.
  template <typename T>
  absl::StatusOr<std::vector<Owned<T>>> RetainBatch(std::span<const Ref> refs) {
    std::vector<T> views;
    views.reserve(refs.size());
    for (Ref r : refs) {
      absl::StatusOr<T> view = View<T>(r);
      if (!view.ok()) return view.status();
      views.push_back(*view);
    }
    std::vector<uint32_t> held_in;
    if (absl::Status s = RetainViews(internal::FastTypeSlot<T>(),
                                     std::vector<StructView>(views.begin(), views.end()),
                                     &held_in);
        !s.ok()) {
      return s;
    }
    return OwnAll(views, /*sole=*/false, &held_in);
  }
  // Releases references this session owns (refs of Disown()ed Owneds).
  // Applies the deferred ones first (Flush).
  absl::Status Release(const std::vector<Ref>& refs);
  // Owned<T> destruction and Clone() make no call to the daemon: they are
  // queued here and applied in batches by a background thread, within
  // about a millisecond (an instance dropped last is freed then). Flush()
  // applies them now; every call of this channel that moves references
  // (Release, Store) flushes first. A process that dies with a queue
  // loses nothing: the daemon releases what its ledger says, which never
  // includes queued operations (doc/lifecycle.md). OK once everything was
  // applied (or refused: the session or the channel is gone);
  // UNAVAILABLE or ABORTED if some of it waits for a retry.
  absl::Status Flush();
  // Releases many Owneds in one call; they are empty afterwards.
  template <typename T>
  absl::Status Release(std::vector<Owned<T>>& owned) {
    std::vector<Ref> refs;
    refs.reserve(owned.size());
    for (Owned<T>& o : owned) {
      if (o) refs.push_back(o.Disown());
    }
    owned.clear();
    if (refs.empty()) return absl::OkStatus();
    return Release(refs);
  }

  // ---- Run-time types (dynamic.h) ----
  // The same operations for a type described at run time, with the same
  // errors, stocks and fast paths as for a STRUCTD_STRUCT type.
  absl::StatusOr<TypeInfo> Use(const DynamicStruct& type);
  absl::StatusOr<std::vector<Owned<DynamicView>>> AllocateBatch(const DynamicStruct& type,
                                                                uint32_t count);
  absl::StatusOr<DynamicView> View(const DynamicStruct& type, Ref ref);
  absl::StatusOr<std::vector<Owned<DynamicView>>> RetainBatch(const DynamicStruct& type,
                                                              std::span<const Ref> refs);

  // ---- Ref fields ----
  // A ref field owns one reference. Store(field, std::move(owned)) moves
  // the Owned's reference into the field; Store(field, ref) adds a new
  // reference. The field's previous value is released.
  // No call in the common case (doc/lifecycle.md, "Store"): the field is
  // exchanged in shared memory, the reference moving from (or retained
  // into) a slot of the session record, and the previous value given up
  // from that slot; a batch, an Owned held in the ledger, a run-time type,
  // or the census running make it one call.
  template <typename T, typename U>
  absl::Status Store(RefTo<T> field, Owned<U>&& value) {
    if constexpr (std::is_same_v<T, U> && !std::is_same_v<T, StructView>) {
      value.Unshare();
      if (value && value.channel_.get() == this) {
        if (value.slot_ != internal::kNoSlot) {
          if (StoreFromSlot(field.owner(), field.field_.word(), value.slot_)) {
            value.Forget();
            return absl::OkStatus();
          }
        } else if (std::optional<uint32_t> slot =
                       RetainIntoSlot(internal::FastTypeSlot<T>(), value.view_)) {
          // Held in the ledger: the field gets a reference retained into a
          // slot, and the ledger's is released (queued, off this thread).
          if (StoreFromSlot(field.owner(), field.field_.word(), *slot)) {
            DeferRelease(value.ref());
            value.Forget();
            return absl::OkStatus();
          }
          DropSlot(*slot, value.ref());
        }
      }
    }
    RefStores batch;
    batch.Move(field, value);
    return Store(batch);
  }
  template <typename T>
  absl::Status Store(RefTo<T> field, Ref value) {
    if constexpr (!std::is_same_v<T, StructView>) {
      if (absl::StatusOr<T> view = View<T>(value); view.ok()) {
        if (std::optional<uint32_t> slot = RetainIntoSlot(internal::FastTypeSlot<T>(), *view)) {
          if (StoreFromSlot(field.owner(), field.field_.word(), *slot)) return absl::OkStatus();
          DropSlot(*slot, value);  // given back; the call below stores
        }
      }
    }
    RefStores batch;
    batch.Copy(field, value);
    return Store(batch);
  }
  template <typename T>
  absl::Status Clear(RefTo<T> field) {
    if (StoreFromSlot(field.owner(), field.field_.word(), internal::kNoSlot)) {
      return absl::OkStatus();
    }
    RefStores batch;
    batch.Clear(field);
    return Store(batch);
  }
  // Applies a batch (split into calls of at most 100,000 stores).
  absl::Status Store(RefStores& batch);

  // ---- Roots (named references that outlive sessions) ----
  absl::Status SetRoot(const std::string& name, Ref ref);
  absl::StatusOr<Ref> GetRoot(const std::string& name);
  absl::Status DeleteRoot(const std::string& name);
  absl::StatusOr<std::vector<RootInfo>> ListRoots();

  // ---- Ports (doc/ports.md) ----
  // Creates a port of `capacity` messages (a power of two, 2 to 1,048,576)
  // named by root `name`. ALREADY_EXISTS if a root of that name exists.
  absl::StatusOr<PortInfo> CreatePort(const std::string& name, uint32_t capacity);
  absl::StatusOr<std::vector<PortInfo>> ListPorts();
  // The port `name`, to send and receive T messages (structd/client/port.h).
  // NOT_FOUND if there is none. The first OpenPort of a Channel opens its
  // session's record in the arena (one more instance of the channel, of
  // the built-in type "structd.session/1024"), through which messages then
  // move without calls; from then on the stocks of Allocate are refilled
  // into its slots, so that what this process allocates is sent without a
  // call too.
  template <typename T>
  absl::StatusOr<Port<T>> OpenPort(const std::string& name);

  // ---- Behavior tables (this process only) ----
  // Binds `table` to the type `token` for this process, replacing an
  // earlier binding. FAILED_PRECONDITION once the process sealed its
  // bindings (Client::SealBindings); NOT_FOUND for an unknown token.
  template <typename Table>
  absl::Status Bind(shm::TypeToken token, Table table) {
    return BindErased(token, std::type_index(typeid(Table)),
                      std::make_shared<const Table>(std::move(table)));
  }
  template <typename T, typename Table>
  absl::Status Bind(Table table) {
    absl::StatusOr<TypeInfo> type = Use<T>();
    if (!type.ok()) return type.status();
    return Bind(type->token, std::move(table));
  }
  // The table of type Table bound to `view`'s type. FAILED_PRECONDITION:
  // "no behavior bound for type 'Vector' (token ...) in this process", or
  // a table of another C++ type is bound.
  template <typename Table>
  absl::StatusOr<const Table*> Behavior(const StructView& view) const {
    const internal::BoundTable* bound = behaviors_.Find(view.type_index());
    if (bound == nullptr || bound->table_type != std::type_index(typeid(Table))) {
      return NoBehavior(view, bound, typeid(Table).name());
    }
    return static_cast<const Table*>(bound->table.get());
  }
  // Calls the method `member` of the table bound to `view`'s type with
  // (view, args...). Returns its result, or the error of Behavior().
  template <typename Table, typename Method, typename View, typename... Args>
  auto Call(const View& view, Method Table::*member, Args&&... args) const {
    using R = std::invoke_result_t<const Method&, const View&, Args...>;
    using Result = std::conditional_t<std::is_void_v<R>, absl::Status, absl::StatusOr<R>>;
    absl::StatusOr<const Table*> table = Behavior<Table>(view);
    if (!table.ok()) return Result(table.status());
    const Method& method = (*table)->*member;
    if constexpr (std::is_void_v<R>) {
      std::invoke(method, view, std::forward<Args>(args)...);
      return absl::OkStatus();
    } else {
      return Result(std::invoke(method, view, std::forward<Args>(args)...));
    }
  }

 private:
  friend class Client;
  friend class internal::Connection;
  template <typename T>
  friend class Owned;
  template <typename T>
  friend class Port;

  Channel(std::shared_ptr<internal::Connection> connection, std::string name,
          std::string id, std::string capability);

  // JoinChannel with `capability` (name or id in `channel`), then maps the arena.
  static absl::StatusOr<std::shared_ptr<Channel>> Join(
      std::shared_ptr<internal::Connection> connection, const std::string& channel,
      const std::string& capability);
  absl::Status MapArena(uint64_t epoch);
  // Joins (again, after the session was re-established) with the
  // capability; maps the arena if it is new.
  absl::Status Rejoin();

  // The cached TypeInfo for T (shared: a re-join may replace the cache).
  template <typename T>
  absl::StatusOr<std::shared_ptr<const TypeInfo>> UseShared() {
    // T's own layout, computed once per program.
    static const absl::StatusOr<shm::Layout> local = shm::Layout::Compute(T::FieldSpecs());
    return UseType(T::kKey, local, T::kOffsets);
  }
  absl::StatusOr<std::shared_ptr<const TypeInfo>> UseType(std::string_view key,
                                   const absl::StatusOr<shm::Layout>& local,
                                   std::span<const uint32_t> offsets);
  // With `held_in`: into free slots of the session's record when it has
  // enough (each instance's slot code, or kNoSlot, pushed there).
  absl::StatusOr<std::vector<shm::InstancePtr>> AllocateInstances(
      shm::TypeToken token, uint32_t count, std::vector<uint32_t>* held_in = nullptr);
  // Allocate<T>'s common case: one spare of the type in `slot`, if the
  // session is alive and the stock has one.
  bool TakeSpare(uint32_t slot, shm::InstancePtr* out, uint32_t* held_in);
  // The drop of a sole Owned (see Owned::sole_) of the type in `slot`:
  // recycled in place into the stock if no other reference exists, else
  // queued for release.
  void DropSole(uint32_t slot, const StructView& view, uint32_t held_in);
  // `count` instances of `type`: through the stock of `slot` if there is
  // one for it, else AllocateInstances.
  absl::StatusOr<std::vector<shm::InstancePtr>> AllocateFor(uint32_t slot,
                                                            const TypeInfo& type,
                                                            uint32_t count,
                                                            std::vector<uint32_t>* held_in);
  absl::StatusOr<shm::InstancePtr> ResolveAs(Ref ref, const TypeInfo& type) const;
  // View's common case: T's cached record in `slot` resolves `ref`.
  bool TryViewFast(uint32_t slot, Ref ref, shm::InstancePtr* out) const {
    if (slot >= internal::kFastTypeSlots) return false;
    const FastType* f = fast_types_[slot].load(std::memory_order_acquire);
    return f != nullptr && f->arena.TryResolveTyped(ref, f->block, out);
  }
  // View's other cases: resolved and checked against `type`, then cached.
  absl::StatusOr<shm::InstancePtr> ViewSlow(uint32_t slot, Ref ref, const TypeInfo& type);
  // Ports (port.h). The port root `name` names (NOT_FOUND otherwise).
  absl::StatusOr<Ref> FindPort(const std::string& name);
  // Moves a reference this session owns into the port (queued operations
  // applied first, so the daemon's counts include them); while the port
  // is full, sleeps on its count of emptied cells until `timeout`
  // (RESOURCE_EXHAUSTED for a timeout <= 0, DEADLINE_EXCEEDED after).
  absl::Status SendToPortWaiting(const std::string& name, Ref port, Ref ref,
                                 std::chrono::nanoseconds timeout);
  // The oldest message of the port, into this session's ownership;
  // sleeps on the port's publish counter (instance `port`) until one
  // comes or `timeout` ends (NOT_FOUND for a timeout <= 0 and nothing
  // there, DEADLINE_EXCEEDED after a wait).
  absl::StatusOr<Ref> ReceiveFromPortWaiting(const std::string& name, Ref port,
                                             std::chrono::nanoseconds timeout);
  // The ring of port instance `port` in this process's mapping, for its
  // wake-up words; none if it does not resolve or a member damaged it.
  std::optional<shm::PortRing> PortRingOf(Ref port) const;
  // An Owned of a reference this session owns (a message just received,
  // or a send given back), in its ledger or in slot `slot` of its record.
  template <typename T>
  Owned<T> Adopt(Ref ref, uint32_t slot = internal::kNoSlot) {
    absl::StatusOr<T> view = View<T>(ref);
    return view.ok() ? Owned<T>(shared_from_this(), *view, /*sole=*/false, slot) : Owned<T>();
  }
  // Moves in shared memory (port.cc, client/src/move_record.h): the
  // session's record, opened on first use (one OpenSessionRecord call);
  // null if the daemon gives none (then ports fall back to calls).
  internal::MoveRecord* Moves();
  // Sends the reference in slot `slot` (an Owned's slot code) into port
  // instance `port`, waiting as `wait` says. Nothing if it cannot be done
  // here (no record, a slot of an arena since replaced, the port not
  // mapped): the caller calls the daemon instead.
  std::optional<absl::Status> SendFromSlot(Ref port, uint32_t slot, shm::PortWait wait);
  // The oldest message of port instance `port`, received into a free slot
  // of the record, waiting as `wait` says. Nothing if it cannot be done
  // here (as above, or every slot in use): the caller calls the daemon.
  struct SlotMessage {
    Ref ref;
    uint32_t slot = internal::kNoSlot;  // its slot code
  };
  std::optional<absl::StatusOr<SlotMessage>> ReceiveIntoSlot(Ref port, shm::PortWait wait);
  // The drop of the reference in slot `slot`: the slot marked given up,
  // then its release queued (the daemon takes it from the slot).
  void DropSlot(uint32_t slot, Ref ref);
  // Marks slot `slot` given up (a release of its reference follows); false
  // for a slot of a replaced arena (the daemon released it with that).
  bool GiveUpSlot(uint32_t slot);
  // Moves the reference in slot `slot` to the session's ledger: a queued
  // retain, then DropSlot (retains are applied before releases).
  void MoveSlotToLedger(uint32_t slot, Ref ref);
  // Wraps `views` as Owneds (RetainBatch's end, after RetainRefs).
  template <typename T>
  std::vector<Owned<T>> OwnAll(const std::vector<T>& views, bool sole,
                               const std::vector<uint32_t>* held_in = nullptr) {
    std::vector<Owned<T>> out;
    out.reserve(views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      const uint32_t slot =
          held_in != nullptr && i < held_in->size() ? (*held_in)[i] : internal::kNoSlot;
      out.push_back(Owned<T>(shared_from_this(), views[i], sole, slot));
    }
    return out;
  }
  // View<T>'s per-type record: the arena and what T's blocks look like
  // there. Immutable once published; never freed while the Channel lives
  // (a reader may still hold one after a reset), and the arena it names
  // stays mapped as long (replaced arenas are retired, not unmapped).
  struct FastType {
    shm::Arena::FastResolver arena;
    shm::TypedBlock block;
    uint64_t arena_number;  // arenas_mapped_ when it was made
  };
  void RememberFastType(uint32_t slot, const TypeInfo& type);
  // Empties every slot (the arena or the types changed). REQUIRES: mu_.
  void ResetFastTypesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RetainRefs(const std::vector<Ref>& refs);
  // RetainBatch's references to `views` (of the type in fast-type slot
  // `type_slot`), all or none: each into a free slot of the record where
  // it can be (*held_in gets its slot code), the others by RetainRefs
  // (kNoSlot).
  absl::Status RetainViews(uint32_t type_slot, const std::vector<StructView>& views,
                           std::vector<uint32_t>* held_in);
  // A reference to `view` raised in shared memory into a free slot of the
  // record (shm/local_retain.h): its slot code, or nothing if it is not
  // done here (no record or free slot, the census running, a refcount of
  // 0, the view of another arena); then nothing changed.
  std::optional<uint32_t> RetainIntoSlot(uint32_t type_slot, const StructView& view);
  // Stores the reference in slot `slot` (a slot code; kNoSlot: clears the
  // field) into the ref field whose word is `field`, of instance `holder`,
  // in shared memory (shm/local_store.h); the field's previous reference
  // is given up from that slot. False if not done here (no record or free
  // slot, the census running, the holder being freed or not in the
  // record's arena): nothing changed, the slot still holds its reference.
  bool StoreFromSlot(Ref holder, uint64_t* field, uint32_t slot);
  // One Retain or Release call with `refs` (at most max_refs_per_call);
  // `*sent` as Connection::Call says.
  absl::Status CallRefs(bool retain, std::span<const Ref> refs, bool* sent = nullptr);
  // The Release RPC(s), without flushing first.
  absl::Status ReleaseNow(const std::vector<Ref>& refs);
  // One Retain or Release call for the deferred queue, its status as
  // DeferredRefs::Apply defines it.
  absl::Status ApplyDeferred(bool retain, const std::vector<Ref>& refs);
  // Owned<T>'s queued operations (deferred_refs.h). DeferRetain is
  // FAILED_PRECONDITION once the session was lost.
  absl::Status DeferRetain(Ref ref);
  void DeferRelease(Ref ref);
  absl::Status BindErased(shm::TypeToken token, std::type_index table_type,
                          std::shared_ptr<const void> table);
  absl::Status NoBehavior(const StructView& view, const internal::BoundTable* bound,
                          const char* wanted) const;

  std::shared_ptr<internal::Connection> connection_;
  std::string name_;  // set before the Channel is handed out, then fixed
  std::string id_;
  const std::string capability_;

  mutable base::Mutex mu_;
  // Replaced (under mu_) when a restarted daemon hands out a new arena; the
  // old one moves to retired_arenas_ and stays mapped, so a reference that
  // arena() returned never dangles.
  std::unique_ptr<shm::Arena> arena_ ABSL_GUARDED_BY(mu_);
  uint64_t arena_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // Arenas this Channel has mapped so far: names the current one for the
  // records that must not mix arenas (FastType, the stocks).
  uint64_t arenas_mapped_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<shm::Arena>> retired_arenas_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<const TypeInfo>, std::less<>> types_by_key_
      ABSL_GUARDED_BY(mu_);
  internal::BehaviorTable behaviors_;
  // View<T>'s cache (see FastType): read without mu_, written under it.
  std::array<std::atomic<const FastType*>, internal::kFastTypeSlots> fast_types_{};
  std::vector<std::unique_ptr<const FastType>> fast_type_records_ ABSL_GUARDED_BY(mu_);
  // Allocate<T>'s stocks. Destroyed (its thread stopped, its spares given
  // back) first thing in ~Channel, while everything it calls lives.
  std::unique_ptr<internal::SpareInstances> spares_;
  // The session's record for moves in shared memory (Moves()): read
  // without mu_, replaced under it when the arena is; records of replaced
  // arenas are kept (an Owned may still name their slots: DropSlot then
  // sees an old incarnation and leaves them).
  std::atomic<internal::MoveRecord*> moves_{nullptr};
  std::vector<std::unique_ptr<internal::MoveRecord>> move_records_ ABSL_GUARDED_BY(mu_);
  base::Mutex open_moves_mu_;  // one OpenSessionRecord at a time
  // After a failed OpenSessionRecord, ports use calls until then.
  std::chrono::steady_clock::time_point no_record_before_ ABSL_GUARDED_BY(open_moves_mu_);
  // Last: destroyed first, applying what is queued while the rest lives.
  std::unique_ptr<internal::DeferredRefs> deferred_;
};

template <typename T>
absl::StatusOr<Owned<T>> Owned<T>::Clone() const {
  if (!view_) {
    return absl::FailedPreconditionError("Owned::Clone: empty (nothing to clone)");
  }
  // The session's one reference is shared by the group: no call, no
  // change of the ledger or the refcount. `this` is a member, so the
  // group outlives the increment.
  internal::SharedOwned* group = shared_.load(std::memory_order_acquire);
  if (group == nullptr) {
    auto* made = new internal::SharedOwned(channel_, sole_, slot_);  // counts this and the clone
    if (shared_.compare_exchange_strong(group, made, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
      return Owned<T>(made, view_);
    }
    delete made;  // another thread's first clone won; `group` is its group
  }
  group->owneds.fetch_add(1, std::memory_order_relaxed);
  return Owned<T>(group, view_);
}

template <typename T>
void Owned<T>::Reset() {
  internal::SharedOwned* group = shared_.load(std::memory_order_relaxed);
  if (group != nullptr) {
    // acq_rel: the last one out sees every other member's writes to the
    // group (Unshare's `sole`) and may delete it.
    if (group->owneds.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      DropReference(*group->channel, group->sole.load(std::memory_order_relaxed), group->slot);
      delete group;
    }
  } else if (channel_ && view_) {
    DropReference(*channel_, sole_, slot_);
  }
  shared_.store(nullptr, std::memory_order_relaxed);
  channel_.reset();
  view_ = T();
  sole_ = false;
  slot_ = internal::kNoSlot;
}

template <typename T>
void Owned<T>::DropReference(Channel& channel, bool sole, uint32_t slot) const {
  if (sole) {
    // Recycled in place into the stock (a slot keeps the reference), or
    // dropped from its slot or the ledger.
    channel.DropSole(internal::SlotOf(view_), view_, slot);
  } else if (slot != internal::kNoSlot) {
    channel.DropSlot(slot, view_.ref());
  } else {
    channel.DeferRelease(view_.ref());
  }
}

template <typename T>
void Owned<T>::Unshare() {
  internal::SharedOwned* group = shared_.load(std::memory_order_relaxed);
  if (group == nullptr) return;
  std::shared_ptr<Channel> channel = group->channel;
  if (group->owneds.load(std::memory_order_acquire) == 1) {
    // The last member (nobody can clone it meanwhile: only members clone,
    // and this is a non-const call on the only one): the group's
    // reference becomes this Owned's.
    sole_ = group->sole.load(std::memory_order_relaxed);
    slot_ = group->slot;
    delete group;
  } else {
    // Others keep the group's reference: this Owned takes one of its own,
    // queued before it leaves so that the session's count never dips
    // under the Owneds alive (doc/lifecycle.md). Neither reference may be
    // recycled in place now: the daemon counts the new one only once the
    // retain is applied. A retain refused because the session is lost
    // leaves nothing to protect.
    group->sole.store(false, std::memory_order_relaxed);
    (void)channel->DeferRetain(view_.ref());
    if (group->owneds.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The others left meanwhile: give back the group's reference.
      DropReference(*channel, /*sole=*/false, group->slot);
      delete group;
    }
    sole_ = false;
    slot_ = internal::kNoSlot;  // the retain's reference is in the ledger
  }
  shared_.store(nullptr, std::memory_order_relaxed);
  channel_ = std::move(channel);
}

template <typename T>
void Owned<T>::LeaveSlot() {
  if (slot_ == internal::kNoSlot || !channel_) return;
  channel_->MoveSlotToLedger(slot_, view_.ref());
  slot_ = internal::kNoSlot;
}

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_CHANNEL_H_
