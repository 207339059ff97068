// Channel: ports (doc/ports.md). A port is an instance of the built-in
// type "structd.port/CAPACITY" (shm::PortRing::LayoutFields: its messages
// are an array<ref,N>, so the census, the free path and inspection count
// and follow them like any ref field), named and kept alive by a root.
// Here: creating ports, the daemon's own moves for the gRPC calls (a
// session's ledger <-> the port), listing, and the repair of the daemon's
// moves after a restart.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/channel.h"
#include "spdlog/spdlog.h"
#include "structd/shm/walk.h"

namespace structd::server {
namespace {

// The capacity a registered port type was made for, or 0 if `type` is not
// a port type (its key is PortTypeKey of its "seq" array's length).
uint32_t PortCapacityOf(const RegisteredType& type) {
  std::optional<size_t> seq = type.layout.FindField("seq");
  if (!seq) return 0;
  const uint32_t capacity = type.layout.fields()[*seq].spec.count;
  return type.key == shm::PortRing::PortTypeKey(capacity) ? capacity : 0;
}

}  // namespace

shm::MoveContext Channel::DaemonMoveLocked(uint64_t* slot) {
  return shm::MoveContext{&daemon_lane_, /*lane_id=*/0, slot, 0, 0};
}

absl::StatusOr<shm::PortRing> Channel::RingOfLocked(const shm::InstancePtr& inst) const {
  const RegisteredType* type = registry_.FindByIndex(inst.type_index());
  const uint32_t capacity = type == nullptr ? 0 : PortCapacityOf(*type);
  if (capacity == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(inst.ref().ToString(), " is not a port (its type is '",
                     type == nullptr ? "unregistered" : type->key, "')"));
  }
  if (!inst.Fits(type->layout.size())) {
    return absl::DataLossError(absl::StrCat("port ", inst.ref().ToString(),
                                            ": its block is smaller than its type"));
  }
  absl::StatusOr<shm::PortRing> ring = shm::PortRing::Attach(inst.payload(), type->layout.size());
  if (ring.ok() && ring->capacity() != capacity) {
    return absl::DataLossError(absl::StrCat(
        "port ", inst.ref().ToString(), ": its capacity word says ", ring->capacity(),
        ", its type ", capacity, " (a member overwrote the port)"));
  }
  return ring;
}

absl::StatusOr<Channel::PortHandle> Channel::PortLocked(const std::string& name) const {
  absl::StatusOr<RootEntry> root = GetRootLocked(name);
  if (!root.ok()) {
    return absl::NotFoundError(absl::StrCat("port '", name, "': no such port in channel '",
                                            name_, "' (create it with CreatePort)"));
  }
  absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(root->ref);
  if (!inst.ok()) return inst.status();
  absl::StatusOr<shm::PortRing> ring = RingOfLocked(*inst);
  if (!ring.ok()) {
    return absl::Status(ring.status().code(),
                        absl::StrCat("root '", name, "': ", ring.status().message()));
  }
  return PortHandle{root->ref, *ring};
}

absl::StatusOr<Channel::PortHandle> Channel::SessionPortLocked(const std::string& session_id,
                                                               const std::string& port) {
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<Ledger*> ledger = LedgerLocked(session_id);
  if (!ledger.ok()) return ledger.status();
  absl::StatusOr<PortHandle> handle = PortLocked(port);
  if (handle.ok()) handle->ledger = *ledger;
  return handle;
}

absl::StatusOr<Channel::PortInfo> Channel::CreatePort(const std::string& name,
                                                      uint32_t capacity) {
  if (absl::Status s = ValidateRootName(name); !s.ok()) return s;
  if (!shm::PortRing::ValidCapacity(capacity)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "port '%s': capacity %u; give a power of two from 2 to %u", name, capacity,
        shm::kMaxPortCapacity));
  }
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  if (roots_.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "port '", name, "': channel '", name_,
        "' already has a root of that name (ports and roots share names; pick another)"));
  }
  absl::StatusOr<shm::Ref> ref = AllocateBuiltinLocked(
      shm::PortRing::PortTypeKey(capacity), shm::PortRing::LayoutFields(capacity),
      absl::StrCat("port '", name, "'"), [&](void* payload, size_t bytes) {
        return shm::PortRing::Format(payload, bytes, capacity);
      });
  if (!ref.ok()) return ref.status();
  // The root takes a reference of its own; the allocation's is dropped
  // either way (freeing the port if the root could not be set). A daemon
  // killed in between leaves an instance the census frees or a root.
  absl::StatusOr<shm::Ref> rooted = SetRootLocked(name, *ref);
  LogIfFailed(allocator_->Release(*ref, TypesLocked()).status(),
              "dropping a new port's allocation");
  if (!rooted.ok()) return rooted.status();
  spdlog::info("channel '{}': port '{}' created ({} messages, {})", name_, name, capacity,
               ref->ToString());
  return PortInfo{name, *ref, capacity};
}

absl::StatusOr<uint32_t> Channel::SendToPort(const std::string& session_id,
                                             const std::string& port,
                                             const std::vector<shm::Ref>& refs) {
  base::MutexLock lock(&mu_);
  absl::StatusOr<PortHandle> handle = SessionPortLocked(session_id, port);
  if (!handle.ok()) return handle.status();
  Ledger* const ledger = handle->ledger;
  if (absl::Status s = ResolveAllLocked(refs); !s.ok()) return s;
  // Owned as many times as listed: checked up front, so that a refusal
  // sends nothing.
  std::map<uint64_t, uint64_t> wanted;
  for (shm::Ref r : refs) ++wanted[r.bits()];
  for (const auto& [bits, n] : wanted) {
    const shm::Ref r = shm::Ref::FromBits(bits);
    if (ledger->Count(r) < n) {
      return absl::FailedPreconditionError(absl::StrCat(
          r.ToString(), ": the session owns ", ledger->Count(r), " reference(s) to it, ",
          n, " sent (send only references you own; Retain one first)"));
    }
  }
  uint32_t sent = 0;
  for (shm::Ref r : refs) {
    // Into the port first, then out of the ledger: a daemon killed in
    // between leaves the reference in both (one too many, released with
    // the session), never in neither.
    uint64_t slot = r.bits();
    absl::Status s = handle->ring.TrySend(DaemonMoveLocked(&slot));
    if (s.code() == absl::StatusCode::kResourceExhausted) break;
    if (!s.ok()) return GuardLocked(absl::Status(s.code(), absl::StrCat("port '", port, "': ", s.message())));
    ledger->Remove(r);
    ++sent;
  }
  if (sent == 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "port '", port, "' is full (", handle->ring.capacity(),
        " messages); nothing was sent: receive from it, or try again later"));
  }
  return GuardLocked(absl::StatusOr<uint32_t>(sent));
}

absl::StatusOr<std::vector<shm::Ref>> Channel::ReceiveFromPort(const std::string& session_id,
                                                               const std::string& port,
                                                               uint32_t max) {
  base::MutexLock lock(&mu_);
  absl::StatusOr<PortHandle> handle = SessionPortLocked(session_id, port);
  if (!handle.ok()) return handle.status();
  Ledger* const ledger = handle->ledger;
  std::vector<shm::Ref> received;
  while (received.size() < max) {
    // Taken, into the ledger, then out of the port: a daemon killed in
    // between puts the message back at its next start (one reference too
    // many in the ledger, released with the session; never none).
    absl::StatusOr<shm::PortRing::Taken> taken = handle->ring.BeginReceive(DaemonMoveLocked(nullptr));
    if (taken.status().code() == absl::StatusCode::kNotFound) break;
    if (!taken.ok()) {
      return GuardLocked(absl::StatusOr<std::vector<shm::Ref>>(absl::Status(
          taken.status().code(), absl::StrCat("port '", port, "': ", taken.status().message()))));
    }
    const shm::Ref r = shm::Ref::FromBits(taken->ref);
    if (!arena_->Resolve(r).ok()) {
      // Not a reference (a member wrote it): dropped from the port.
      spdlog::warn("channel '{}': port '{}': message {} names no live instance; dropped",
                   name_, port, r.ToString());
      handle->ring.FinishReceive(DaemonMoveLocked(nullptr), *taken);
      continue;
    }
    if (absl::Status s = ledger->Add(r); !s.ok()) {
      handle->ring.RepairLane(0, nullptr);  // put it back
      daemon_lane_ = {};
      if (received.empty()) return s;
      break;
    }
    handle->ring.FinishReceive(DaemonMoveLocked(nullptr), *taken);
    received.push_back(r);
  }
  return GuardLocked(absl::StatusOr<std::vector<shm::Ref>>(std::move(received)));
}

std::vector<Channel::PortInfo> Channel::ListPorts() const {
  base::MutexLock lock(&mu_);
  std::vector<PortInfo> out;
  if (!UsableLocked().ok()) return out;
  for (const auto& [name, ref] : roots_) {
    absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
    if (!inst.ok()) continue;
    const RegisteredType* type = registry_.FindByIndex(inst->type_index());
    if (type == nullptr || PortCapacityOf(*type) == 0) continue;
    PortInfo info{name, ref};
    if (absl::StatusOr<shm::PortRing> ring = RingOfLocked(*inst); ring.ok()) {
      const shm::PortRing::Stats st = ring->stats();
      info.capacity = st.capacity;
      info.sent = st.tail;
      info.received = st.head;
      info.receivers_waiting = st.receivers_waiting;
      info.senders_waiting = st.senders_waiting;
    }
    out.push_back(info);
  }
  return out;
}

uint64_t Channel::RepairDaemonPortMovesLocked() {
  uint64_t repaired = 0;
  std::vector<shm::InstancePtr> ports;
  shm::ForEachInstance(*arena_, [&](const shm::InstancePtr& inst) {
    const RegisteredType* type = registry_.FindByIndex(inst.type_index());
    if (type != nullptr && PortCapacityOf(*type) != 0) ports.push_back(inst);
    return true;
  });
  for (const shm::InstancePtr& inst : ports) {
    absl::StatusOr<shm::PortRing> ring = RingOfLocked(inst);
    if (!ring.ok()) {
      spdlog::warn("channel '{}': {}", name_, std::string(ring.status().message()));
      continue;
    }
    // The daemon's lane is 0 in every incarnation; what the last one had
    // in flight is marked with it (one move at a time, but a scribbler
    // may have copied the mark: at most a lap of them).
    for (uint32_t i = 0; i < ring->capacity(); ++i) {
      if (ring->RepairLane(0, nullptr) == shm::PortRing::Repair::kNothing) break;
      ++repaired;
    }
  }
  return repaired;
}

}  // namespace structd::server
