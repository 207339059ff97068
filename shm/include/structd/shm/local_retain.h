#ifndef STRUCTD_SHM_LOCAL_RETAIN_H_
#define STRUCTD_SHM_LOCAL_RETAIN_H_

// A reference taken by a member without the daemon: the instance's
// refcount raised in place and the new reference put into a slot of the
// member's session record (doc/lifecycle.md, "Retain").
//
// The protocol, under a lane of kind kRetain naming the slot and the ref:
//   1. open the lane (shm/move_lane.h); a closed census gate: back out;
//   2. refcount n -> n + 1 (compare-and-swap), only from n > 0: from 0 the
//      instance is being freed or claimed to be recycled in place
//      (shm/local_recycle.h), and nothing is retained;
//   3. the generation checked again: if the block was recycled or freed
//      and reused since the caller resolved the ref, step 2 raised the
//      count of the block's new instance, and the slot gets a reference to
//      that one instead (the caller gives it back: it is a reference like
//      any other);
//   4. the slot := the reference (release);
//   5. the lane idle.
// A member killed between 2 and 4 leaves one count that nothing names;
// between 4 and 5, one the slot names. A refcount cannot say who raised
// it, so the daemon does not guess: when a session ends with a retain's
// lane busy, it recounts the channel (the census) with the record still
// counted, which makes every refcount equal to what names the instance,
// then releases the slots as for any ended session. Exact at every step.
//
// Thread safety: any number of threads and processes at once, each with a
// lane and a slot of its own.

#include <cstdint>

#include "structd/shm/arena.h"
#include "structd/shm/move_lane.h"
#include "structd/shm/ref.h"

namespace structd::shm {

enum class LocalRetain {
  kRetained,       // the slot holds `instance`'s ref, counted
  kOtherInstance,  // the slot holds LocalRetainResult::held, counted: not the one asked for
  kGated,          // the daemon is counting references: nothing changed
  kRefused,        // refcount 0 or at its maximum, or it kept changing: nothing changed
};

struct LocalRetainResult {
  LocalRetain outcome = LocalRetain::kRefused;
  Ref held;  // what the slot holds now (kRetained, kOtherInstance), else null
};

// Retains `instance` (resolved by the caller) into `ctx.slot`, which must
// hold 0, under `ctx.lane` (ctx.port is overwritten with the ref).
LocalRetainResult RetainIntoSlot(MoveContext ctx, const InstancePtr& instance);

namespace internal {
// Tests: the next RetainIntoSlot in this process returns right after its
// step `step` (2: the count raised; 4: the slot stored), its lane left
// busy, as a kill there would leave it. 0: none.
void StopRetainAfterStepForTesting(int step);
}  // namespace internal

}  // namespace structd::shm

#endif  // STRUCTD_SHM_LOCAL_RETAIN_H_
