#ifndef STRUCTD_SHM_MOVE_LANE_H_
#define STRUCTD_SHM_MOVE_LANE_H_

// A lane: one change of who holds a reference, in flight, by a member
// without the daemon (the robust futex's list_op_pending). A session
// record (shm/session_record.h) holds kRecordLanes of them; a thread uses
// one for the length of one operation. The lane says which operation and
// which slot of the record it is moving a reference to or from, so that
// whoever repairs after the member's death (the daemon at the session's
// end) knows what may be half done: a port move (shm/port_ring.h), a
// retain (shm/local_retain.h) or a store (shm/local_store.h). doc/arena-format.md, "Session records".
//
// Plain shared memory, untrusted (a member may write any bytes into a
// lane): the daemon checks the kind and resolves what the lane names.

#include <cstdint>

namespace structd::shm {

// Idle when `op` is 0.
struct MoveLane {
  uint64_t op;    // MoveKind in bits 56..63, the slot's index in bits 0..31
  uint64_t port;  // a send or receive: the port's reference; a retain: the reference
                  // retained; a store: the instance whose field it writes
  uint64_t spare;  // a store: the reference the field held, once known
};
static_assert(sizeof(MoveLane) == 24);

enum class MoveKind : uint8_t { kIdle = 0, kSend = 1, kReceive = 2, kRetain = 3, kStore = 4 };
// Kinds that change a refcount: after a death with one in flight, only a
// recount of the channel can tell what the count should be.
inline bool ChangesACount(MoveKind kind) {
  return kind == MoveKind::kRetain || kind == MoveKind::kStore;
}
inline MoveKind MoveKindOf(uint64_t op) { return static_cast<MoveKind>(op >> 56); }
inline uint32_t MoveSlotOf(uint64_t op) { return static_cast<uint32_t>(op); }

// What a move needs from its caller: the lane it runs under, that lane's
// id (carried by a port cell meanwhile; unique among the lanes of the
// channel, below 2^32), and the slot the reference comes from (a send:
// it holds the reference, left 0) or goes to (a receive or a retain: 0,
// left holding it).
struct MoveContext {
  MoveLane* lane = nullptr;
  uint32_t lane_id = 0;
  uint64_t* slot = nullptr;
  uint32_t slot_index = 0;
  uint64_t port = 0;  // recorded in the lane's second word
  // The census gate of the lane's session record (null: none, the
  // daemon's own moves). A move writes its lane, then looks at the gate;
  // if it is set, it backs out (the lane idle again, nothing moved) and
  // waits for the gate to open: the daemon is counting references.
  uint32_t* gate = nullptr;
};

// Writes the lane (`ctx.port`, then the op, sequentially consistent) and
// looks at the gate (sequentially consistent). False if the gate is
// closed: the lane is idle again and nothing may be moved. Against the
// daemon's "close the gate, then look at the lanes" (both sequentially
// consistent): either the daemon sees the lane busy and waits for it, or
// the mover sees the gate and backs out.
bool OpenLane(const MoveContext& ctx, MoveKind kind);
// The lane idle again (release): the operation is over.
void CloseLane(const MoveContext& ctx);

}  // namespace structd::shm

#endif  // STRUCTD_SHM_MOVE_LANE_H_
