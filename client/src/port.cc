// Channel: ports (structd/client/port.h, doc/ports.md). Creating and
// listing them, and the daemon calls under Port<T>'s Send and Receive;
// a Receive that finds nothing sleeps on the port's publish counter.
#include <algorithm>
#include <atomic>
#include <functional>
#include <string>
#include <optional>
#include <thread>

#include "absl/strings/str_format.h"
#include "client/src/connection.h"
#include "client/src/move_record.h"
#include "client/src/convert.h"
#include "structd/client/channel.h"
#include "structd/shm/field_wait.h"
#include "structd/shm/port_ring.h"

namespace structd::client {

absl::StatusOr<PortInfo> Channel::CreatePort(const std::string& name, uint32_t capacity) {
  v1::CreatePortRequest request;
  request.set_channel(id_);
  request.set_name(name);
  request.set_capacity(capacity);
  v1::CreatePortResponse response;
  if (absl::Status s = connection_->Call(connection_->instances(),
                                         &v1::Instances::Stub::CreatePort, request, &response);
      !s.ok()) {
    return s;
  }
  return internal::PortInfoFromProto(response.port());
}

absl::StatusOr<std::vector<PortInfo>> Channel::ListPorts() {
  v1::ListPortsRequest request;
  request.set_channel(id_);
  v1::ListPortsResponse response;
  if (absl::Status s = connection_->Call(connection_->instances(),
                                         &v1::Instances::Stub::ListPorts, request, &response);
      !s.ok()) {
    return s;
  }
  std::vector<PortInfo> out;
  for (const v1::PortInfo& p : response.ports()) out.push_back(internal::PortInfoFromProto(p));
  return out;
}

absl::StatusOr<Ref> Channel::FindPort(const std::string& name) {
  absl::StatusOr<std::vector<PortInfo>> ports = ListPorts();
  if (!ports.ok()) return ports.status();
  for (const PortInfo& p : *ports) {
    if (p.name == name) return p.ref;
  }
  return absl::NotFoundError(absl::StrFormat(
      "port '%s': channel '%s' has no port of that name (create it with CreatePort)", name,
      name_));
}

namespace {

// Calls `attempt` (true: done; false: not yet) until it is done or fails,
// or `timeout` passes: then `not_yet` for a timeout <= 0, else
// `timed_out`. Without a ring (a damaged port) it polls every millisecond. Between tries it sleeps on the ring's publish counter
// (waiting for a message) or its count of emptied cells (`for_room`: for
// room), counted among the waiters so that the daemon's move makes the
// wake-up call. A process killed asleep leaves the count up: movers then
// make one needless call each, nothing worse.
absl::Status RetryAsleep(std::optional<shm::PortRing>& ring, bool for_room,
                         std::chrono::nanoseconds timeout,
                         const std::function<absl::StatusOr<bool>()>& attempt,
                         const absl::Status& not_yet, const absl::Status& timed_out) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    // Read before the attempt: a move after it changes the word.
    uint32_t* word = !ring ? nullptr : for_room ? ring->freed_word() : ring->published_word();
    const uint32_t seen =
        word == nullptr ? 0 : std::atomic_ref<uint32_t>(*word).load(std::memory_order_acquire);
    absl::StatusOr<bool> done = attempt();
    if (!done.ok()) return done.status();
    if (*done) return absl::OkStatus();
    if (timeout <= std::chrono::nanoseconds::zero()) return not_yet;
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= timeout) return timed_out;
    const std::chrono::nanoseconds left = timeout - waited;
    if (word == nullptr) {
      std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(1)));
      continue;
    }
    for_room ? ring->AddRoomWatcher() : ring->AddPublishWatcher();
    (void)shm::WaitWhileEquals(word, seen, left);
    for_room ? ring->RemoveRoomWatcher() : ring->RemovePublishWatcher();
  }
}

std::string Millis(std::chrono::nanoseconds t) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(t).count());
}

}  // namespace

std::optional<shm::PortRing> Channel::PortRingOf(Ref port) const {
  absl::StatusOr<shm::InstancePtr> inst = arena().Resolve(port);
  if (!inst.ok()) return std::nullopt;
  absl::StatusOr<shm::PortRing> ring =
      shm::PortRing::Attach(inst->payload(), inst->capacity() - shm::kInstanceHeaderSize);
  if (!ring.ok()) return std::nullopt;
  return *ring;
}

absl::Status Channel::SendToPortWaiting(const std::string& name, Ref port, Ref ref,
                                        std::chrono::nanoseconds timeout) {
  // The daemon's counts must include every queued retain before a move.
  if (absl::Status s = Flush(); !s.ok()) return s;
  std::optional<shm::PortRing> ring = PortRingOf(port);
  auto attempt = [&]() -> absl::StatusOr<bool> {
    v1::SendToPortRequest request;
    request.set_channel(id_);
    request.set_name(name);
    request.add_refs(ref.bits());
    v1::SendToPortResponse response;
    absl::Status s = connection_->Call(connection_->instances(),
                                       &v1::Instances::Stub::SendToPort, request, &response);
    if (absl::IsResourceExhausted(s)) return false;  // full
    if (!s.ok()) return s;
    return true;
  };
  return RetryAsleep(
      ring, /*for_room=*/true, timeout, attempt,
      absl::ResourceExhaustedError(absl::StrFormat(
          "port '%s' is full; receive from it, or send with a timeout to wait for room", name)),
      absl::DeadlineExceededError(absl::StrFormat(
          "port '%s' stayed full for %s ms; its receivers are not keeping up", name,
          Millis(timeout))));
}

absl::StatusOr<Ref> Channel::ReceiveFromPortWaiting(const std::string& name, Ref port,
                                                    std::chrono::nanoseconds timeout) {
  std::optional<shm::PortRing> ring = PortRingOf(port);
  Ref got;
  auto attempt = [&]() -> absl::StatusOr<bool> {
    v1::ReceiveFromPortRequest request;
    request.set_channel(id_);
    request.set_name(name);
    request.set_max(1);
    v1::ReceiveFromPortResponse response;
    if (absl::Status s = connection_->Call(connection_->instances(),
                                           &v1::Instances::Stub::ReceiveFromPort, request,
                                           &response);
        !s.ok()) {
      return s;
    }
    if (response.refs_size() == 0) return false;
    got = Ref::FromBits(response.refs(0));
    return true;
  };
  absl::Status s = RetryAsleep(
      ring, /*for_room=*/false, timeout, attempt,
      absl::NotFoundError(absl::StrFormat("port '%s' has no message", name)),
      absl::DeadlineExceededError(absl::StrFormat("no message arrived in port '%s' within %s ms",
                                                  name, Millis(timeout))));
  if (!s.ok()) return s;
  return got;
}

internal::MoveRecord* Channel::Moves() {
  if (internal::MoveRecord* r = moves_.load(std::memory_order_acquire)) return r;
  base::MutexLock open_lock(&open_moves_mu_);
  if (internal::MoveRecord* r = moves_.load(std::memory_order_acquire)) return r;
  if (std::chrono::steady_clock::now() < no_record_before_) return nullptr;
  uint64_t incarnation = 0;
  {
    base::MutexLock lock(&mu_);
    incarnation = arenas_mapped_;
  }
  v1::OpenSessionRecordRequest request;
  request.set_channel(id_);
  v1::OpenSessionRecordResponse response;
  absl::Status s = connection_->Call(connection_->instances(),
                                     &v1::Instances::Stub::OpenSessionRecord, request, &response);
  absl::StatusOr<shm::SessionRecord> view = absl::UnavailableError("not opened");
  const Ref ref = Ref::FromBits(response.record());
  if (s.ok()) {
    absl::StatusOr<shm::InstancePtr> inst = arena().Resolve(ref);
    view = inst.ok() ? shm::SessionRecord::Attach(inst->payload(),
                                                  inst->capacity() - shm::kInstanceHeaderSize)
                     : absl::StatusOr<shm::SessionRecord>(inst.status());
  }
  base::MutexLock lock(&mu_);
  if (!s.ok() || !view.ok() || arenas_mapped_ != incarnation) {
    // Calls until then (an older daemon, a full arena, a re-join racing).
    no_record_before_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    return nullptr;
  }
  move_records_.push_back(std::make_unique<internal::MoveRecord>(
      *view, ref, response.tag(), internal::RecordIncarnation(incarnation)));
  moves_.store(move_records_.back().get(), std::memory_order_release);
  return move_records_.back().get();
}

std::optional<absl::Status> Channel::SendFromSlot(Ref port, uint32_t slot, shm::PortWait wait) {
  internal::MoveRecord* moves = Moves();
  if (moves == nullptr || internal::SlotIncarnation(slot) != moves->incarnation()) {
    return std::nullopt;
  }
  std::optional<shm::PortRing> ring = PortRingOf(port);
  if (!ring) return std::nullopt;
  const uint32_t index = internal::SlotIndex(slot);
  absl::Status s;
  {
    internal::MoveRecord::Lane lane(*moves);
    s = ring->Send(lane.Context(index, port), wait);
  }
  if (s.ok()) moves->ReturnSlot(index);  // the port took its reference
  return s;
}

std::optional<absl::StatusOr<Channel::SlotMessage>> Channel::ReceiveIntoSlot(Ref port,
                                                                            shm::PortWait wait) {
  internal::MoveRecord* moves = Moves();
  if (moves == nullptr) return std::nullopt;
  std::optional<shm::PortRing> ring = PortRingOf(port);
  if (!ring) return std::nullopt;
  std::optional<uint32_t> index = moves->TakeFreeSlot();
  if (!index) {
    // Every slot is used or given up: the queued releases clear the
    // given-up ones.
    (void)Flush();
    index = moves->TakeFreeSlot();
    if (!index) return std::nullopt;
  }
  absl::Status s;
  {
    internal::MoveRecord::Lane lane(*moves);
    s = ring->Receive(lane.Context(*index, port), wait);
  }
  if (!s.ok()) {
    moves->ReturnSlot(*index);
    return absl::StatusOr<SlotMessage>(s);
  }
  return absl::StatusOr<SlotMessage>(SlotMessage{
      Ref::FromBits(moves->SlotValue(*index)), internal::SlotCode(moves->incarnation(), *index)});
}

bool Channel::GiveUpSlot(uint32_t slot) {
  internal::MoveRecord* moves = moves_.load(std::memory_order_acquire);
  if (moves == nullptr || internal::SlotIncarnation(slot) != moves->incarnation()) return false;
  moves->GiveUp(internal::SlotIndex(slot));
  return true;
}

void Channel::DropSlot(uint32_t slot, Ref ref) {
  // A slot of a replaced arena was released by the daemon with that arena
  // (its ref bits may name something else in the new one): nothing to do.
  if (GiveUpSlot(slot)) DeferRelease(ref);
}

void Channel::MoveSlotToLedger(uint32_t slot, Ref ref) {
  (void)DeferRetain(ref);
  DropSlot(slot, ref);
}

}  // namespace structd::client
