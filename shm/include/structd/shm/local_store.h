#ifndef STRUCTD_SHM_LOCAL_STORE_H_
#define STRUCTD_SHM_LOCAL_STORE_H_

// A reference moved from a slot of a member's session record into a ref
// field, without the daemon; the field's previous reference comes back
// into the same slot, for the member to give up (doc/lifecycle.md,
// "Store").
//
// The protocol, under a lane of kind kStore naming the slot and the
// instance that holds the field (the holder):
//   1. open the lane (shm/move_lane.h); a closed census gate: back out;
//   2. the holder's refcount n -> n + 1 from n > 0 (the guard: while it is
//      in, the holder cannot be freed, so the field cannot be released
//      under the store), and its generation checked;
//   3. old := the field; lane.spare := old; field: old -> the slot's
//      reference by compare-and-swap (again from 3 if it changed);
//   4. slot := old (release); 0 if the field was empty;
//   5. the guard dropped: the holder's refcount n -> n - 1 from n >= 2;
//      if the guard is the last reference (everyone else dropped the
//      holder meanwhile), it goes into `guard_slot` instead, for the
//      member to give up through the daemon (which frees the holder);
//   6. the lane idle.
// Between 3 and 4 the stored reference is named twice (slot and field)
// and the old one not at all; the guard is counted but named nowhere
// until 5. As for a retain, the daemon repairs a member killed anywhere in
// there by recounting the channel when its session ends (with the record
// still counted) and then releasing its slots: the count of every
// instance is then what names it, which is exact at every step.
//
// Thread safety: any number of threads and processes at once, each with a
// lane and slots of its own. Stores into one field from several members
// at once are each an exchange: every reference that was in the field is
// handed back to exactly one of them.
//
// Between 3 and 4 the old reference is named only by the lane's spare
// word: a census that finds the lane busy (a stopped process) leaves the
// instances the lane names (holder, slot, spare) alone.

#include <cstdint>

#include "structd/shm/arena.h"
#include "structd/shm/move_lane.h"
#include "structd/shm/ref.h"

namespace structd::shm {

enum class LocalStore {
  kStored,  // the field holds the slot's reference; the slot holds `old`
  kGated,   // the daemon is counting references: nothing changed
  kRefused,     // the holder's count is 0 (being freed) or at its maximum, or the field
                // kept changing: nothing stored (`guard` as below)
  kHolderGone,  // the holder was freed or replaced since it was resolved: nothing stored;
                // `guard` (in guard_slot) is a reference to the block's new instance
};

struct LocalStoreResult {
  LocalStore outcome = LocalStore::kRefused;
  Ref old;    // kStored: what the field held (now in the slot), or null
  Ref guard;  // non-null: a reference in guard_slot the caller gives up
};

// Stores the reference in `*ctx.slot` (0 to clear the field) into
// `field`, a ref field of `holder`, under `ctx.lane` (ctx.port is
// overwritten with the holder's ref). `guard_slot`: a free slot (0).
LocalStoreResult StoreFromSlot(MoveContext ctx, const InstancePtr& holder, uint64_t* field,
                               uint64_t* guard_slot);

namespace internal {
// Tests: the next StoreFromSlot in this process returns right after its
// step `step` (2: the guard raised; 3: the field written; 4: the slot
// holds the old reference), its lane left busy, as a kill there would
// leave it. 0: none.
void StopStoreAfterStepForTesting(int step);
// Tests: `hook` runs in the next StoreFromSlot right after step 4 (as
// another member's work would), then is forgotten.
void RunAfterStoreStep4ForTesting(void (*hook)());
}  // namespace internal

}  // namespace structd::shm

#endif  // STRUCTD_SHM_LOCAL_STORE_H_
