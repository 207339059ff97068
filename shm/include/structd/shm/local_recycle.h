#ifndef STRUCTD_SHM_LOCAL_RECYCLE_H_
#define STRUCTD_SHM_LOCAL_RECYCLE_H_

// Recycling an instance in place, by its sole owner, without the daemon:
// how a client drops an instance it alone references and gets a fresh one
// from the same block (doc/lifecycle.md, "Drop").
//
// The protocol, on the instance's header, each step one atomic operation:
//   1. refcount 1 -> 0 (compare-and-swap): the claim. It fails if anyone
//      else holds a reference (the daemon counts every other one in the
//      refcount before it is handed out), and once it succeeds the daemon
//      retains nothing (Allocator::Retain refuses a zero refcount and
//      re-checks the generation after its own increment);
//   2. generation + 1 (release): every ref to the old instance is stale;
//   3. the payload zeroed;
//   4. refcount 0 -> 1 (release): the new instance, owned by the same
//      session through the same ledger entry.
// The daemon's ledger names the block, not the generation
// (server/src/core/ledger.h), so the session's one reference carries over
// without telling the daemon. A process killed at any step leaves the
// block with its refcount 0 or 1 and its type set, listed once in its
// session's ledger: the daemon frees it at the session's end once the
// process is known to have exited (Channel::Leave), exactly once,
// whatever the step.
//
// Only for instances of types without ref fields (the references such
// fields hold are released by the daemon when an instance is freed) and
// without mutex fields (a mutex is initialized, not zeroed, and a holder's
// robust list may still name it).

#include <cstdint>
#include <optional>

#include "structd/shm/arena.h"

namespace structd::shm {

// The next incarnation of `instance` (same block, next generation, payload
// of `payload_bytes` zeroed, refcount 1), or nothing if it cannot be
// recycled here, in which case nothing changed and the caller releases it
// the ordinary way: its refcount is not 1 (another reference exists), its
// generation is not `instance`'s (it was freed), its type is not
// `type_index`, or the block's generations are nearly used up.
// REQUIRES: the caller holds the only reference its process has to
// `instance`, and `payload_bytes` fits the block.
std::optional<InstancePtr> RecycleSoleInstance(const InstancePtr& instance, uint32_t type_index,
                                               uint32_t payload_bytes);

}  // namespace structd::shm

#endif  // STRUCTD_SHM_LOCAL_RECYCLE_H_
