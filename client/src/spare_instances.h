#ifndef STRUCTD_CLIENT_SRC_SPARE_INSTANCES_H_
#define STRUCTD_CLIENT_SRC_SPARE_INSTANCES_H_

// Instances allocated ahead of need, per type, so that Channel::Allocate<T>
// takes one from this process's memory instead of calling the daemon.
//
// A spare is an ordinary reference the session owns: the daemon allocated
// it (zero-filled, refcount 1) and listed it in the session's ledger, or
// wrote it into a slot of the session's record, like any other
// allocation; it is simply not handed to the program yet. So
// spares need no protocol and no shared structure of their own, and they
// are exact after any crash: a process that dies holding spares has them
// released with the rest of its ledger at its session's end, and a daemon
// restart keeps them (the census counts ledgers; the session resumes with
// the same ledger). doc/lifecycle.md, "Allocate".
//
// Each type has a stock with a target size. A take that leaves the stock
// below half its target asks the background thread for a refill (one
// AllocateBatch call); a take that finds too few allocates what it needs
// plus a new stock in one call on the caller's thread, and doubles the
// target, up to kMaxStockBytes of blocks and kMaxTarget instances.
//
// Lock order: mu_ before a stock's mu; a stock's mu is held for no call.
// Thread safety: every method may be called from any thread.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "structd/base/mutex.h"
#include "structd/client/owned.h"
#include "structd/shm/arena.h"
#include "structd/shm/format.h"
#include "structd/shm/ref.h"
#include "structd/shm/type_token.h"

namespace structd::client::internal {

class SpareInstances {
 public:
  // What a stock holds: instances of one type of one arena.
  struct Type {
    shm::TypeToken token;  // zero: no type
    uint32_t type_index = 0;
    uint32_t payload_bytes = 0;
    // No ref fields nor mutex fields: a sole owner may recycle an instance
    // in place.
    bool recyclable = false;
    // Which of the Channel's arenas (they change when a restarted daemon
    // recreated the channel): an instance of another is never stocked.
    uint64_t arena = 0;
    uint64_t block_bytes() const { return shm::InstanceBlockBytes(payload_bytes); }
    friend bool operator==(const Type&, const Type&) = default;
  };

  // A spare, and where the session holds it: a slot of its record (an
  // Owned of it may be sent through a port without a call), or its ledger
  // (kNoSlot).
  struct Spare {
    Spare() = default;
    Spare(shm::InstancePtr p, uint32_t slot = kNoSlot) : p(p), slot(slot) {}  // NOLINT
    shm::InstancePtr p;
    uint32_t slot = kNoSlot;
  };
  // Allocates `count` zero-filled instances of `token` owned by the session
  // (all or none): one AllocateBatch call.
  using AllocateFn =
      std::function<absl::StatusOr<std::vector<Spare>>(shm::TypeToken token, uint32_t count)>;
  // Gives back references the session owns (spares no longer wanted): one
  // Release call per max_refs_per_call, on the calling thread.
  using ReleaseFn = std::function<absl::Status(const std::vector<shm::Ref>& refs)>;
  // Marks the slot of a spare about to be given back (before ReleaseFn):
  // the release then takes it from there.
  using GiveUpSlotFn = std::function<void(uint32_t slot)>;

  static constexpr uint32_t kSlots = 64;  // the first 64 C++ types allocated
  static constexpr uint32_t kFirstTarget = 16;
  static constexpr uint32_t kMaxTarget = 4096;
  static constexpr uint64_t kMaxStockBytes = uint64_t{256} << 10;
  // A refill that failed is not tried again in the background for this
  // long (a channel at its quota must not be asked every take).
  static constexpr std::chrono::milliseconds kRefillBackoff{100};

  // `background` false: stocks are filled only by takes (tests).
  SpareInstances(AllocateFn allocate, ReleaseFn release, bool background = true,
                 GiveUpSlotFn give_up_slot = nullptr);
  // Stops the background thread, then gives back every spare (best effort:
  // what cannot be given back is released at the session's end).
  ~SpareInstances();
  SpareInstances(const SpareInstances&) = delete;
  SpareInstances& operator=(const SpareInstances&) = delete;

  // One spare from the stock of `slot`, if it has one (a Take set the slot
  // up before): the stock's lock and a pop, no call.
  // `*held_in`: where the session holds it.
  bool TryTakeOne(uint32_t slot, shm::InstancePtr* out, uint32_t* held_in = nullptr);
  // `count` instances of `type` into `out`, all or none: from the stock of `slot` if it holds enough, else
  // by one allocation of `count` plus a new stock. On RESOURCE_EXHAUSTED
  // every spare of every type is given back and `count` alone is tried
  // once more, so spares never make an allocation fail that would have
  // succeeded without them. REQUIRES: slot < kSlots.
  absl::Status Take(uint32_t slot, const Type& type, uint32_t count,
                    std::vector<shm::InstancePtr>& out, std::vector<uint32_t>* held_in = nullptr);
  // The drop of the last reference to `instance`, held by this process
  // alone (an Owned that came from Allocate and was never cloned), of the
  // stock's type in `arena`: recycles it in place into the stock
  // (shm::RecycleSoleInstance) and returns true, or returns false with
  // nothing changed (another reference exists, the type cannot be
  // recycled, the stock is full or of another arena): the caller then
  // releases it the ordinary way. No call, no system call.
  // `held_in`: where the session holds it; a slot of the record (its word
  // at `slot_word`) is made to name the recycled instance before it is
  // stocked.
  bool TryRecycle(uint32_t slot, uint64_t arena, const shm::InstancePtr& instance,
                  uint32_t held_in = kNoSlot, uint64_t* slot_word = nullptr);
  // Gives back every spare; returns how many there were. Stocks stay empty
  // (no background refill) until the next Take.
  size_t ReleaseAll();
  // Drops every spare without giving it back: the arena it was allocated in
  // is gone (a daemon that recreated the channel), and so is the ledger.
  void Forget();
  // Spares held now, over all types.
  size_t size();

 private:
  struct Stock {
    base::Mutex mu;
    std::vector<Spare> spares ABSL_GUARDED_BY(mu);
    Type type ABSL_GUARDED_BY(mu);  // token zero: not set up
    uint32_t target ABSL_GUARDED_BY(mu) = kFirstTarget;
    // Bumped by Forget and by a change of type: an allocation begun before
    // is not added to the stock.
    uint64_t epoch ABSL_GUARDED_BY(mu) = 0;
    bool refill_asked ABSL_GUARDED_BY(mu) = false;
    // Given back by ReleaseAll: neither refilled nor recycled into until
    // the next Take.
    bool dormant ABSL_GUARDED_BY(mu) = false;
    std::chrono::steady_clock::time_point no_refill_before ABSL_GUARDED_BY(mu);
  };
  // What `p`'s header says now. kSpare: live, of its generation and type,
  // referenced once. kDoubtful: live and ours, but its refcount is not 1
  // (a stale retain racing, or a member writing it): given back through
  // the daemon, which knows. kGone: freed or reused (the daemon ended the
  // session behind the process's back, or a member scribbled it): dropped.
  enum class SpareState { kSpare, kDoubtful, kGone };
  static SpareState Check(const shm::InstancePtr& p, uint32_t type_index);
  // What a stock may hold for blocks of `block_bytes`.
  static uint32_t MaxTarget(uint64_t block_bytes);
  // Takes the last spare of `stock` that Check finds still spare into
  // `*out`; false if none is left. Doubtful ones on the way go into
  // `doubtful` (to be given back), gone ones are dropped.
  static bool PopOne(Stock& stock, Spare* out, std::vector<Spare>& doubtful)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stock.mu);
  // Sets `stock` up for `type` (giving back spares of another type into
  // `unwanted`); false if it was set up for it already.
  static bool SetUp(Stock& stock, const Type& type, std::vector<Spare>& unwanted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stock.mu);
  // Asks the background thread to refill `slot` if its stock is below half
  // its target. Call without the stock's lock.
  void MaybeAskRefill(uint32_t slot);
  // Take, keeping each spare's slot.
  absl::Status TakeSpares(uint32_t slot, const Type& type, uint32_t count,
                          std::vector<Spare>& out);
  // Adds `made` to the stock of `slot` if it is still at `epoch`; what it
  // does not take goes into `unwanted`, unless Forget ran since `forgets`
  // was read (then it is dropped).
  void Stash(uint32_t slot, uint64_t epoch, uint64_t forgets, std::vector<Spare>& made,
             std::vector<Spare>& unwanted);
  // Gives `spares` back (slots marked given up first) and empties it.
  void GiveBack(std::vector<Spare>& spares);
  void Refill(uint32_t slot);
  void Run();

  const AllocateFn allocate_;
  const ReleaseFn release_;
  const GiveUpSlotFn give_up_slot_;
  const bool background_;
  std::array<Stock, kSlots> stocks_;
  std::atomic<uint64_t> forgets_{0};  // Forget calls so far
  base::Mutex mu_;
  base::CondVar wake_;
  uint64_t wanted_ ABSL_GUARDED_BY(mu_) = 0;  // slots to refill, a bit each
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // started with the first refill
};

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_SRC_SPARE_INSTANCES_H_
