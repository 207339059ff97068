// Channel: ports (structd/client/port.h, doc/ports.md). Creating and
// listing them, and the daemon calls under Port<T>'s Send and Receive;
// a Receive that finds nothing sleeps on the port's publish counter.
#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>

#include "absl/strings/str_format.h"
#include "client/src/connection.h"
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

absl::Status Channel::SendToPortNow(const std::string& name, Ref ref) {
  // The daemon's counts must include every queued retain before a move.
  if (absl::Status s = Flush(); !s.ok()) return s;
  v1::SendToPortRequest request;
  request.set_channel(id_);
  request.set_name(name);
  request.add_refs(ref.bits());
  v1::SendToPortResponse response;
  return connection_->Call(connection_->instances(), &v1::Instances::Stub::SendToPort, request,
                           &response);
}

absl::StatusOr<Ref> Channel::ReceiveFromPortWaiting(const std::string& name, Ref port,
                                                    std::chrono::nanoseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  // The ring in this process's mapping, for its publish counter. A port
  // whose memory a member damaged is polled instead (every millisecond).
  std::optional<shm::PortRing> ring;
  if (absl::StatusOr<shm::InstancePtr> inst = arena().Resolve(port); inst.ok()) {
    absl::StatusOr<shm::PortRing> attached =
        shm::PortRing::Attach(inst->payload(), inst->capacity() - shm::kInstanceHeaderSize);
    if (attached.ok()) ring = *attached;
  }
  auto published = [&] {
    return ring ? std::atomic_ref<uint32_t>(*ring->published_word()).load(std::memory_order_acquire)
                : 0u;
  };
  for (;;) {
    // Read before looking: a message published after the look changes it.
    const uint32_t seen = published();
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
    if (response.refs_size() > 0) return Ref::FromBits(response.refs(0));
    if (timeout <= std::chrono::nanoseconds::zero()) {
      return absl::NotFoundError(absl::StrFormat("port '%s' has no message", name));
    }
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= timeout) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "no message arrived in port '%s' within %d ms", name,
          std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
    }
    const std::chrono::nanoseconds left = timeout - waited;
    if (!ring) {
      std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(1)));
      continue;
    }
    // Counted among the waiters, so that a sender makes the wake-up call
    // (a process killed here leaves the count up: senders then make one
    // needless call each, nothing worse).
    ring->AddPublishWatcher();
    (void)shm::WaitWhileEquals(ring->published_word(), seen, left);
    ring->RemovePublishWatcher();
  }
}

}  // namespace structd::client
