#ifndef STRUCTD_SERVER_CORE_CHANNEL_H_
#define STRUCTD_SERVER_CORE_CHANNEL_H_

#include <cstdint>
#include <map>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "structd/base/mutex.h"
#include "absl/status/statusor.h"
#include "core/census.h"
#include "core/descriptor_store.h"
#include "core/ledger.h"
#include "core/meta_store.h"
#include "core/process_handle.h"
#include "core/secret_digest.h"
#include "core/store_intent.h"
#include "core/type_registry.h"
#include "structd/shm/allocator.h"
#include "structd/shm/arena.h"
#include "structd/shm/inspection.h"
#include "structd/shm/mapping_guard.h"
#include "structd/shm/port_ring.h"

namespace structd::server {

enum class Role { kMember, kOwner };

struct ArenaSummary {
  uint64_t extent_size = 0;
  uint32_t max_extents = 0;
  uint32_t extent_count = 0;
  uint32_t format_version = 0;
  uint64_t epoch = 0;
};

struct RootEntry {
  std::string name;
  shm::Ref ref;
  shm::TypeToken token;
};

using shm::ArenaProblem;
using shm::DecodedField;
using shm::DecodedInstance;
using shm::InstanceListing;

struct CheckReport {
  uint64_t instances_checked = 0;
  std::vector<ArenaProblem> problems;
};

// Live instances of one registered type (metrics).
struct TypeLive {
  std::string key;
  uint64_t instances = 0;
  uint64_t bytes = 0;  // their blocks, headers included
};

struct ChannelStats {
  uint32_t types = 0;
  uint32_t roots = 0;
  uint32_t sessions = 0;
  uint32_t session_records = 0;  // live: of sessions, and of ended ones kept
  bool sealed = false;
  bool dropped = false;
  shm::AllocatorStats alloc;
  // Per registered type, in registration order (types with none live too).
  std::vector<TypeLive> by_type;
  // Arena files a member resized that the daemon put back, since start.
  uint64_t file_size_repairs = 0;
  // 1 - live bytes / bytes of assigned slabs; 0 when none is assigned
  // (GetMemoryResponse.fragmentation in admin.proto).
  double fragmentation() const {
    uint64_t assigned = (alloc.class_slabs + alloc.large_slabs) * uint64_t{shm::kSlabSize};
    return assigned == 0 ? 0.0
                         : 1.0 - static_cast<double>(alloc.live_block_bytes) /
                                     static_cast<double>(assigned);
  }
};

// The memory of a ChannelImage's copy is an anonymous mapping populated
// when it is made: one call instead of a page fault per 4 KiB under the
// channel's lock (page faults were a third of a snapshot's time on a
// virtual machine). This unmaps it.
struct UnmapImageMemory {
  uint64_t size = 0;
  void operator()(uint8_t* p) const;
};

// A copy of a channel for a snapshot (core/snapshot_format.h): its
// metadata and its arena's files, byte for byte, as of one moment of the
// channel's structure. Ledgers are left out: sessions do not move with a
// snapshot. Owned by the caller; nothing in it is shared.
struct ChannelImage {
  struct File {
    std::string name;  // "arena", "extent.N"
    std::unique_ptr<uint8_t[], UnmapImageMemory> bytes;
    uint64_t size = 0;
  };
  ChannelMeta meta;
  std::vector<File> files;  // the header, then extents in order
  uint32_t arena_format_version = 0;
  uint32_t extent_count = 0;
  shm::ArenaIdentity identity;
  uint64_t live_instances = 0;
  // Bytes and string fields rewritten from torn-free reads.
  uint64_t composite_fields = 0;
};

// A session's process, to tell whether it has exited: by its pidfd, or
// (none to be had) by kill(pid, 0). Neither: never known to exit.
struct SessionProcess {
  std::shared_ptr<const ProcessHandle> handle;
  pid_t pid = 0;
  bool Exited() const;
};

// One channel: its arena and allocator, type registry, roots, and the
// ledgers of the sessions that joined it. The domain rules for all of them
// live here; the Core decides who may call what.
//
// Files, under the channel's directory (mode 0700):
//   meta.toml           name, capabilities, registry, roots: a snapshot
//   meta.journal        the changes since the snapshot (MetaStore)
//   arena/              the arena (doc/arena-format.md)
//   ledgers/SESSION     one ledger per joined session
//
// Thread safety: every public method locks the channel's mutex.
class Channel {
 public:
  // What one channel may hold; each limit is a daemon option.
  struct Limits {
    shm::LayoutLimits layout;   // max_fields, max_type_bytes
    RegistryLimits registry;    // max_types_per_channel, max_registry_bytes
    uint32_t max_roots = 100000;  // max_roots_per_channel
  };
  struct Options {
    std::string id;
    std::string name;
    std::string dir;
    shm::ArenaOptions arena;
    Limits limits;
    uid_t creator_uid = 0;  // whose quota the arena counts against
    // Set: the arena is sealed memfds kept in this store (no arena/
    // directory); null: files in arena/.
    std::shared_ptr<DescriptorStore> memfd_store;
  };
  // The capabilities of a new channel, in clear: Create hands them out
  // once (to CreateChannel's caller); the channel keeps only digests.
  struct IssuedCapabilities {
    std::string owner;
    std::string member;
  };
  // Creates the directory, arena and meta file, with fresh capabilities.
  static absl::StatusOr<std::unique_ptr<Channel>> Create(const Options& options,
                                                         IssuedCapabilities* issued);
  // Re-adopts a channel after a daemon restart: meta.toml (name,
  // capabilities, types with their tokens and indexes, roots), the arena
  // (the allocator's state is rebuilt by scanning it) and every session's
  // ledger (those sessions may resume; see Core). DataLoss naming the file
  // for damaged metadata.
  // A channel with a sealed arena takes its memfds from `store`; without
  // a store it is not restored (FailedPrecondition, its files untouched).
  static absl::StatusOr<std::unique_ptr<Channel>> Restore(
      const std::string& dir, const Limits& limits, std::shared_ptr<DescriptorStore> store);
  // Sessions that have a ledger here.
  std::vector<std::string> LedgerSessions() const;
  // Sessions whose ledger here could not be read at restore. Their file
  // is kept as ledgers/SESSION.damaged; while any such file exists the
  // channel's refcounts are never lowered and nothing is freed by the
  // census (what those sessions held stays counted), and the sessions
  // cannot resume (Core).
  std::vector<std::string> DamagedLedgerSessions() const;

  // After a crash of the daemon in the middle of an operation: makes every
  // refcount equal to the references that exist (roots, ledger entries,
  // ref fields of live instances), drops roots, ledger entries and ref
  // fields that name no live instance, and frees instances nothing refers
  // to. Returns how many things it repaired. Members may be writing the
  // arena meanwhile: every instance is resolved again before it is
  // changed, and one that no longer resolves is left alone. With a
  // damaged ledger (DamagedLedgerSessions) refcounts are only raised.
  struct RepairReport {
    uint64_t dangling_dropped = 0;   // roots, ledger entries, ref fields
    uint64_t refcounts_fixed = 0;
    uint64_t leaked_freed = 0;       // instances nothing referred to
    // Unreferenced instances kept because a damaged ledger may hold them.
    uint64_t kept_counted = 0;
    // Port moves of the previous daemon's, finished or put back.
    uint64_t port_moves_repaired = 0;
    uint64_t total() const {
      return dangling_dropped + refcounts_fixed + leaked_freed + port_moves_repaired;
    }
  };
  RepairReport Reconcile();

  const std::string& id() const { return id_; }
  const std::string& name() const { return name_; }
  const std::string& dir() const { return dir_; }
  uid_t creator_uid() const { return creator_uid_; }
  // Bytes of the arena's extents (each fully backed).
  uint64_t arena_bytes() const;
  // Arena files that cost the daemon a descriptor (a sealed arena's header
  // and extents; 0 for files in arena/): what max_arena_files counts.
  uint32_t arena_descriptor_files() const;
  // A descriptor of one of the arena's files for a member (the memory
  // socket): the header, or a published extent (NotFound otherwise).
  // DataLoss if the channel is damaged, NotFound if dropped and gone.
  absl::StatusOr<base::UniqueFd> OpenArenaFile(shm::ArenaFile file) const;
  // Puts back the size of any arena file a member changed through its
  // descriptor (shm::Arena::RestoreFileSizes), logging each repair; a file
  // cut short leaves the channel damaged (DATA_LOSS until a restart).
  // Returns how many files it repaired.
  size_t RestoreFileSizes();
  // The quota every growth of the arena must pass (Allocator::GrowthGate).
  void SetGrowthGate(shm::Allocator::GrowthGate gate);

  // PermissionDenied for a capability that is neither.
  absl::StatusOr<Role> CheckCapability(const std::string& capability) const;
  // Joins `session_id` (idempotent) and creates its ledger.
  absl::Status Join(const std::string& session_id);
  // Releases every reference in the session's ledger and deletes it.
  // Returns how many references were released. A block the session left
  // claimed (refcount 0: its process was recycling it in place,
  // shm/local_recycle.h) is freed once `process` has exited: now if it
  // has, else by ReapClaims (a live process may be finishing the recycle).
  uint64_t Leave(const std::string& session_id, const SessionProcess& process = {});
  // Frees the claimed blocks Leave left whose process has exited since, and
  // forgets those whose process finished the recycle. Returns how many
  // were freed. Called by the daemon's reaper, every 200 ms.
  uint64_t ReapClaims();
  bool HasSession(const std::string& session_id) const;
  // Sessions with a ledger here (cheap: no arena work).
  size_t session_count() const;
  uint64_t RefsHeld(const std::string& session_id) const;
  // Zeros once the channel is destroyed.
  ArenaSummary arena_summary() const;
  // OK, or why the channel can no longer serve requests: NotFound once it
  // was dropped and destroyed, DataLoss once a file under it was
  // truncated while the daemon had it mapped. Every operation starts (and
  // every changing one ends) with this check.
  absl::Status Usable() const;

  absl::StatusOr<TypeRegistry::RegisterResult> RegisterType(
      const std::string& key, std::vector<shm::FieldSpec> fields);
  absl::StatusOr<RegisteredType> DescribeType(shm::TypeToken token) const;
  std::vector<RegisteredType> ListTypes(bool* sealed) const;
  absl::Status Seal();

  // Allocates `count` instances owned by `session_id` (all or nothing):
  // in its ledger, or, with `into_slots` (count distinct indexes of free
  // slots of its record), in those slots.
  absl::StatusOr<std::vector<shm::Ref>> Allocate(const std::string& session_id,
                                                 shm::TypeToken token,
                                                 uint32_t count,
                                                 const std::vector<uint32_t>& into_slots = {});
  absl::Status Retain(const std::string& session_id,
                      const std::vector<shm::Ref>& refs);
  // Returns instances freed (transitively).
  absl::StatusOr<uint64_t> Release(const std::string& session_id,
                                   const std::vector<shm::Ref>& refs);

  // Stores refs into ref fields. An empty `session_id` is an operator's
  // store (no ledger: nothing may be moved). The field then owns one
  // reference, which is released when it is overwritten or its instance
  // is freed. With `move`, the reference comes out of the session's
  // ledger (the session must own it); without, a new one is retained. A
  // null value clears the field. All stores are validated before any is applied (all or none);
  // the values the fields held before are released last. Returns the
  // instances freed by those releases (transitively).
  struct RefStore {
    shm::Ref target;     // a live instance of the channel
    uint32_t field = 0;  // index of a ref field in its layout
    shm::Ref value;      // null, or a live instance (of the field's type)
    bool move = false;
  };
  absl::StatusOr<uint64_t> StoreRefs(const std::string& session_id,
                                     const std::vector<RefStore>& stores);

  // An operator's write of one field (Admin.SetField). `field`: a field
  // name, or "name[i]" for element i of an array. `value`: text parsed
  // against the field's type: scalars by shm::ParseScalarText, strings
  // as given, bytes as hex digits (optionally 0x-prefixed), refs as
  // "r:E:O:G", 16 hex digits or "null" (stored as StoreRefs stores
  // without move: the field owns a new reference, its old one is
  // released). Nothing is written on any error: InvalidArgument (unknown
  // field, malformed value, value too long), OutOfRange (number or
  // index), FailedPrecondition (mutex and condition fields, a ref of the
  // wrong type), NotFound (no such live instance).
  struct FieldWrite {
    std::string key;       // the instance's type
    std::string field;     // as given
    std::string type;      // the field's (element's) type, e.g. "u32"
    std::string previous;  // before and after, as InspectInstance prints
    std::string value;
  };
  absl::StatusOr<FieldWrite> SetFieldAsAdmin(shm::Ref ref, const std::string& field,
                                             const std::string& value);

  // Returns the previous ref (null if the root is new).
  absl::StatusOr<shm::Ref> SetRoot(const std::string& name, shm::Ref ref);
  absl::StatusOr<RootEntry> GetRoot(const std::string& name) const;
  absl::Status DeleteRoot(const std::string& name);
  std::vector<RootEntry> ListRoots() const;

  // Ports (doc/ports.md; core/channel_ports.cc): bounded queues of
  // references in the arena, each an instance of the built-in type
  // "structd.port/CAPACITY" named by a root (which keeps it alive).
  struct PortInfo {
    std::string name;
    shm::Ref ref;
    uint32_t capacity = 0;
    uint64_t sent = 0;      // the ring's tail
    uint64_t received = 0;  // its head
    uint32_t receivers_waiting = 0;
    uint32_t senders_waiting = 0;
  };
  // AlreadyExists if root `name` exists; InvalidArgument for a capacity
  // that is not a power of two in [2, shm::kMaxPortCapacity].
  absl::StatusOr<PortInfo> CreatePort(const std::string& name, uint32_t capacity);
  // Moves refs the session owns into the port, in order, until it is
  // full; returns how many (ResourceExhausted if none fit).
  absl::StatusOr<uint32_t> SendToPort(const std::string& session_id, const std::string& port,
                                      const std::vector<shm::Ref>& refs);
  // Moves up to `max` messages into the session's ledger, oldest first.
  absl::StatusOr<std::vector<shm::Ref>> ReceiveFromPort(const std::string& session_id,
                                                        const std::string& port, uint32_t max);
  // Roots that name a port, with the port's counters (a port whose memory
  // a member damaged is listed with capacity 0).
  std::vector<PortInfo> ListPorts() const;

  // Session records (shm/session_record.h; doc/ports.md, "Moves in
  // shared memory"; core/channel_records.cc): the words in the arena
  // through which a session's client moves references without calling
  // the daemon. One per session, allocated by the first OpenRecord
  // (idempotent), released with the session (Leave).
  struct RecordInfo {
    shm::Ref ref;
    uint32_t tag = 0;
  };
  absl::StatusOr<RecordInfo> OpenRecord(const std::string& session_id);

  // Marks the channel dropped: no new joins. Returns true if no session is
  // joined any more, i.e. the caller may Destroy() it now.
  bool MarkDropped();
  bool dropped() const { return dropped_.load(); }
  // Repairs of the channel's files made when it was restored at start-up.
  size_t restore_repair_count() const { return restore_repairs_.size(); }
  // MarkDropped, but only if no session has joined for `unused` (checked
  // and done under one lock, so a join cannot slip in between).
  bool MarkDroppedIfUnusedFor(std::chrono::steady_clock::duration unused);
  // Deletes the channel's files. Only after every session has left.
  void Destroy();

  ChannelStats Stats() const;

  // Copies the channel for a snapshot, under the channel's lock: types,
  // roots, allocations and frees wait for the copy, so its structure is
  // as of one moment; members keep writing fields meanwhile, and each
  // field is copied as of some moment during the copy (words atomically,
  // bytes and strings through their torn-free read). ResourceExhausted if
  // the host lacks the memory for the copy (its size is the arena's).
  absl::StatusOr<ChannelImage> CaptureImage() const;
  // For a channel just restored from a snapshot: the processes its
  // fields name are gone (shm::ForgetProcesses). Returns the held mutexes
  // it left owner-died.
  uint32_t ForgetProcesses();

  // Admin inspection. `filter` (if non-zero) limits to one type; at most
  // `limit` instances are listed (counts cover all).
  InstanceListing ListInstances(shm::TypeToken filter, uint32_t limit) const;
  // Decodes one instance, following ref fields `depth` hops (at most 8).
  absl::StatusOr<DecodedInstance> Inspect(shm::Ref ref, uint32_t depth) const;
  // Read-only consistency check: every live instance's refcount equals the
  // references that exist (roots + ledger entries + ref fields of live
  // instances); every ref field resolves; every type index is registered
  // and its layout fits the block. One problem per finding, naming the
  // instance.
  CheckReport Check() const;

  // For inspection and tests under the channel lock: `fn(arena, registry)`.
  // REQUIRES: the channel is not destroyed.
  template <typename Fn>
  auto WithArena(Fn fn) const {
    base::MutexLock lock(&mu_);
    return fn(*arena_, registry_);
  }

  // What Restore repaired in the channel's files (for the log and status).
  const std::vector<std::string>& restore_repairs() const { return restore_repairs_; }

 private:
  Channel() = default;
  absl::Status UsableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The bodies of the public calls of the same names, under mu_.
  absl::StatusOr<std::vector<shm::Ref>> AllocateLocked(
    const std::string& session_id, shm::TypeToken token, uint32_t count,
      const std::vector<uint32_t>& into_slots = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RetainLocked(const std::string& session_id,
                             const std::vector<shm::Ref>& refs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> ReleaseLocked(const std::string& session_id,
                                          const std::vector<shm::Ref>& refs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> StoreRefsLocked(
    const std::string& session_id, const std::vector<RefStore>& stores)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<shm::Ref> SetRootLocked(const std::string& name,
                                          shm::Ref ref)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<RootEntry> GetRootLocked(const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DeleteRootLocked(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<DecodedInstance> InspectTopLocked(shm::Ref ref, uint32_t depth) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A status on a path that cannot act on it (an undo, a cleanup): logged,
  // never dropped silently. None is fatal: each can be caused by a member
  // scribbling the arena, which is bad input, not a broken invariant of
  // the daemon (doc/daemon.md, "Errors nobody waits for").
  void LogIfFailed(const absl::Status& s, std::string_view what) const;
  // `result`, unless the channel became unusable meanwhile (a file cut
  // short under a mapping this call touched): then UsableLocked's status,
  // whatever the call concluded from the zeros it read.
  template <typename T>
  T GuardLocked(T result) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (absl::Status u = UsableLocked(); !u.ok()) return u;
    return result;
  }
  // Registers a type and records it in the metadata (RegisterType, and
  // the daemon's built-in types).
  absl::StatusOr<TypeRegistry::RegisterResult> RegisterLocked(
      const std::string& key, std::vector<shm::FieldSpec> fields, TypeRegistry::Origin origin)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One instance of the built-in type `key` (registered first if need
  // be), its payload made by `format(payload, bytes)`: the allocation's
  // reference, which the caller keeps or drops. An instance `format`
  // refuses is released. `what` names it in errors ("port 'jobs'").
  absl::StatusOr<shm::Ref> AllocateBuiltinLocked(
      const std::string& key, std::vector<shm::FieldSpec> fields, const std::string& what,
      absl::FunctionRef<absl::Status(void* payload, size_t bytes)> format)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The port root `name` names, attached (NotFound, FailedPrecondition if
  // the root names something else, DataLoss if the port's memory was
  // damaged), with the ring's memory checked against its registered type.
  struct PortHandle {
    shm::Ref ref;
    shm::PortRing ring;
    Ledger* ledger = nullptr;  // SessionPortLocked: the caller's
  };
  absl::StatusOr<PortHandle> PortLocked(const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PortLocked for a session's move, with the session's ledger.
  absl::StatusOr<PortHandle> SessionPortLocked(const std::string& session_id,
                                               const std::string& port)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<shm::PortRing> RingOfLocked(const shm::InstancePtr& inst) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a restart: finishes or undoes the moves the previous daemon had
  // in flight in every port (RepairLane of the daemon's lane). Returns
  // how many it repaired.
  uint64_t RepairDaemonPortMovesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The daemon's own lane for port moves, made under mu_ (one at a time).
  // Lane id 0 is the daemon's; clients' lanes are never 0.
  shm::MoveContext DaemonMoveLocked(uint64_t* slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  shm::MoveLane daemon_lane_ ABSL_GUARDED_BY(mu_) = {};

  // Every record held now: the ledgers' (sessions) and the ended
  // sessions' kept for their processes (left_records_). A record that does
  // not resolve as one (a member freed or overwrote it) is left out, with
  // a warning.
  std::vector<HeldRecord> RecordsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<shm::SessionRecord> RecordViewLocked(shm::Ref ref) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The census with every record's gate closed (doc/arena-format.md,
  // "Session records"): no client move runs while it counts. `in_flight`: blocks
  // named by lanes still busy after a bounded wait (a stopped mover), which
  // Reconcile neither lowers nor frees and Check does not report.
  // The gates stay closed until OpenGatesLocked: a retain (which changes a
  // count, not only where a reference is) must not run between the count
  // and a repair that writes refcounts from it.
  struct GatedCensus {
    Census census;
    std::set<uint64_t> in_flight;
    std::vector<HeldRecord> gated;  // the records whose gates it closed
  };
  GatedCensus TakeGatedCensusLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpenGatesLocked(const GatedCensus& gated) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reconcile's repair, under the lock the caller holds.
  RepairReport ReconcileLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The end of a record: its lanes' moves finished or undone, its slots
  // released, the record released; returns the references released. If a
  // lane is busy and `process` has not exited, kept in left_records_ for
  // ReapClaims instead (0). A retain in flight (shm/local_retain.h) may
  // have raised a count nothing names: the channel is recounted first,
  // with the record still counted. REQUIRES: the session's ledger is no
  // longer in ledgers_ (its entries were released: a census must not
  // count them).
  uint64_t EndRecordLocked(const HeldRecord& record, const SessionProcess& process)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases `count` references an ended session held to the block `ref`
  // names (a ledger entry or a slot), whatever instance is there now; a
  // block its process left claimed for a recycle in place (refcount 0) is
  // freed once `process` has exited (left_claims_ until then). Returns how
  // many references that released.
  uint64_t ReleaseEndedHoldingLocked(shm::Ref ref, uint64_t count, const std::string& session,
                                     const SessionProcess& process)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Release's share of a session's references held in its record: which
  // refs of `refs` a slot the client marked given up holds (each slot
  // once). Plans only; TakeMarkedSlotsLocked applies.
  struct SlotTake {
    uint32_t slot = 0;
    size_t index = 0;  // in `refs`
    shm::Ref ref;
  };
  std::vector<SlotTake> PlanMarkedSlotsLocked(const Ledger& ledger,
                                              const std::vector<shm::Ref>& refs) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies a plan: each slot cleared if it still holds its ref (a slot
  // whose ref changed was scribbled: that ref is not released). Returns
  // the refs taken.
  std::vector<shm::Ref> TakeMarkedSlotsLocked(const Ledger& ledger,
                                              const std::vector<SlotTake>& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records of ended sessions with a move in flight, kept until their
  // process has exited (ReapClaims ends them).
  struct LeftRecord {
    HeldRecord record;
    SessionProcess process;
  };
  std::vector<LeftRecord> left_records_ ABSL_GUARDED_BY(mu_);
  // The next record's tag (tags are never reused while the daemon runs;
  // after a restart, the highest restored one + 1).
  uint32_t next_record_tag_ ABSL_GUARDED_BY(mu_) = 1;

  // Applies a store intent left by a daemon that died inside StoreRefs.
  void ReplayIntentLocked(const StoreIntent& intent) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string IntentPath() const { return dir_ + "/store.intent"; }
  shm::Allocator::TypeLookup TypesLocked() const;
  absl::StatusOr<Ledger*> LedgerLocked(const std::string& session_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ResolveAllLocked(const std::vector<shm::Ref>& refs) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool MarkDroppedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InspectLocked(shm::Ref ref, uint32_t depth, std::set<uint64_t>& seen,
                     DecodedInstance& out) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string id_;
  std::string name_;
  std::string dir_;
  SecretDigest owner_capability_;
  SecretDigest member_capability_;
  uint64_t created_unix_ms_ = 0;
  uid_t creator_uid_ = 0;
  bool arena_memfd_ = false;  // the arena is sealed memfds (fixed at creation)
  std::chrono::steady_clock::time_point unused_since_ ABSL_GUARDED_BY(mu_) =
      std::chrono::steady_clock::now();

  mutable base::Mutex mu_;
  std::unique_ptr<shm::Arena> arena_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<shm::Allocator> allocator_ ABSL_GUARDED_BY(mu_);
  TypeRegistry registry_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, shm::Ref> roots_ ABSL_GUARDED_BY(mu_);
  uint32_t max_roots_ = 100000;
  // The metadata on disk; every change of registry, roots, seal and drop
  // is recorded here before it is acknowledged.
  std::unique_ptr<MetaStore> store_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Ledger>> ledgers_ ABSL_GUARDED_BY(mu_);
  // Blocks ended sessions left claimed, with their processes (ReapClaims).
  struct LeftClaim {
    shm::Ref ref;  // with the generation it had when left
    SessionProcess process;
  };
  std::vector<LeftClaim> left_claims_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> damaged_ledgers_ ABSL_GUARDED_BY(mu_);
  uint64_t file_size_repairs_ ABSL_GUARDED_BY(mu_) = 0;  // since start (metrics)
  // Written under mu_; read without it (Core looks channels up under its
  // own lock, which must not wait for a channel's).
  std::atomic<bool> dropped_{false};
  // Set by the SIGBUS guard when a ledger file was truncated while mapped.
  mutable shm::DamageFlag ledger_damage_;
  std::vector<std::string> restore_repairs_;
};

// Channel ids: 16 lower-case hex digits.
bool LooksLikeChannelId(const std::string& text);
// Channel names: 1 to 64 characters of [A-Za-z0-9_.-], not shaped like a
// channel id (calls accept either, so they must never be confusable).
absl::Status ValidateChannelName(const std::string& name);
// Root names: 1 to 128 characters of [A-Za-z0-9_.:/-].
absl::Status ValidateRootName(const std::string& name);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_CHANNEL_H_
