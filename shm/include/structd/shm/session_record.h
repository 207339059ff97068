#ifndef STRUCTD_SHM_SESSION_RECORD_H_
#define STRUCTD_SHM_SESSION_RECORD_H_

// A session record (issue 18; doc/design/ports.md, "Who owns what"): the
// words in a channel's arena through which a client moves references
// without calling the daemon. The daemon allocates one per session and
// channel (an instance of the built-in type SessionRecord::TypeKey()),
// keeps its ref and tag in its private state, and after the session's end
// finishes or undoes the moves its lanes have in flight and releases what
// its slots hold.
//
//   lanes   kRecordLanes moves in flight, one per thread at a time (the
//           robust futex's list_op_pending; shm::MoveLane). A lane's id,
//           carried by the port cell it is filling or emptying, is
//           LaneId(tag, index): unique among the lanes of the channel.
//   slots   kRecordSlots words, each 0 or one reference the session owns
//           (in addition to its ledger). The census counts them; the
//           client receives into free ones and sends from full ones.
//   marks   one word per slot: 1 once the client has given that slot's
//           reference up (a dropped Owned): the Release call then takes
//           the reference from the slot (the daemon clears it) instead of
//           from the ledger. A slot the client still uses is never marked,
//           so no release can take it from under a send.
//   gate    1 while the daemon counts references (the census): a move
//           that finds it set after writing its lane backs out and waits
//           (doc/arena-format.md, "Session records").
//
// Plain shared memory, untrusted: the daemon reads it with bounds and
// checks; a member that scribbles it spoils its own channel only.
// SessionRecord is a per-process view; it owns nothing. Thread safety:
// the words are atomics; who writes which is the protocol above.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/shm/layout.h"
#include "structd/shm/port_ring.h"

namespace structd::shm {

inline constexpr uint32_t kRecordLanes = 32;
inline constexpr uint32_t kRecordSlots = 1024;
// Tags are 1 to kMaxRecordTag, so lane ids fit 32 bits and never meet the
// daemon's own lane, 0.
inline constexpr uint32_t kMaxRecordTag = (uint32_t{1} << 27) - 1;

struct SessionRecordHeader {
  uint32_t gate;        // 1 while the daemon's census runs
  uint32_t tag;         // the daemon's tag for this record (informative)
  uint32_t lane_count;  // kRecordLanes
  uint32_t slot_count;  // kRecordSlots
  uint8_t pad[48];
};
static_assert(sizeof(SessionRecordHeader) == 64);

class SessionRecord {
 public:
  // The record as the fields of a built-in type: the header's words, then
  // array<u64, 3 * kRecordLanes> "lanes", array<u64, kRecordSlots>
  // "slots", array<u32, kRecordSlots> "marks".
  static std::vector<FieldSpec> LayoutFields();
  static std::string TypeKey();
  static size_t Bytes();
  static uint32_t LaneId(uint32_t tag, uint32_t lane) { return tag * kRecordLanes + lane; }

  // Makes `bytes` at `mem` an empty record of `tag`. REQUIRES: zero-filled,
  // 8-byte aligned, nobody uses it yet.
  static absl::Status Format(void* mem, size_t bytes, uint32_t tag);
  // A view of a record in `bytes` at `mem`: DataLoss if its counts (shared
  // memory: untrusted) are not this build's or it does not fit.
  static absl::StatusOr<SessionRecord> Attach(void* mem, size_t bytes);

  uint32_t* gate() const { return &header_->gate; }
  MoveLane* lane(uint32_t i) const { return &lanes_[i % kRecordLanes]; }
  uint64_t* slot(uint32_t i) const { return &slots_[i % kRecordSlots]; }
  uint32_t* mark(uint32_t i) const { return &marks_[i % kRecordSlots]; }

  // For the daemon's census: sets the gate (sequentially consistent: a
  // mover that wrote its lane before sees it, or the daemon sees the lane)
  // or clears it and wakes the movers waiting on it.
  void CloseGate() const;
  void OpenGate() const;
  // True while lane `i` has a move in flight (a sequentially consistent
  // load, after CloseGate).
  bool LaneBusy(uint32_t i) const;

 private:
  SessionRecord(SessionRecordHeader* h, MoveLane* lanes, uint64_t* slots, uint32_t* marks)
      : header_(h), lanes_(lanes), slots_(slots), marks_(marks) {}
  SessionRecordHeader* header_;
  MoveLane* lanes_;
  uint64_t* slots_;
  uint32_t* marks_;
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_SESSION_RECORD_H_
