#ifndef STRUCTD_CLIENT_PORT_H_
#define STRUCTD_CLIENT_PORT_H_

// Port<T>: a bounded queue of references in a channel's arena, the
// postMessage of structd (doc/ports.md). Send moves an Owned<T> into the
// port; Receive moves the oldest message out as an Owned<T> of this
// session's. Many senders and many receivers, in any processes of the
// channel; each message is received once.
//
// Send and Receive move the reference in shared memory, between a slot of
// this session's record and the port's ring (doc/ports.md, "Moves in
// shared memory"): no call to the daemon per message. A Receive that
// finds the port empty sleeps on its publish counter (a futex in the
// arena), a Send that finds it full on its count of emptied cells; both
// may spin first. What is received is held in a slot of the record, and
// sent on from there, as is what Allocate takes from a stock refilled
// into the record's slots (once this process has opened a port). An
// Owned whose reference the session holds in its ledger instead
// (retained, allocated before a port was opened, or with clones alive)
// is sent by one call to the daemon, as is everything when the daemon
// gives no record (an older daemon) or every slot is in use.
//
// Thread safety: a Port may be used from any number of threads.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "structd/client/channel.h"
#include "structd/shm/field_watch.h"
#include "structd/shm/port_ring.h"

namespace structd::client {

template <typename T>
class Port {
 public:
  const std::string& name() const { return name_; }
  Ref ref() const { return ref_; }

  // Moves `message` into the port: OK and `message` is empty (the port
  // owns the reference until someone receives it). RESOURCE_EXHAUSTED
  // when the port is full, and any other error: `message` still holds
  // its reference.
  absl::Status Send(Owned<T>& message) { return Send(message, std::chrono::nanoseconds::zero()); }
  absl::Status Send(Owned<T>&& message) { return Send(message); }
  // Send that waits up to `timeout` for room (first `spin` looks, then
  // asleep on the port's count of emptied cells): DEADLINE_EXCEEDED if the
  // port stayed full, and `message` still holds its reference.
  absl::Status Send(Owned<T>& message, std::chrono::nanoseconds timeout, uint32_t spin = 0) {
    if (!message) return absl::InvalidArgumentError("send: the Owned is empty");
    if (message.slot_ != internal::kNoSlot &&
        message.shared_.load(std::memory_order_relaxed) == nullptr) {
      std::optional<absl::Status> local =
          channel_->SendFromSlot(ref_, message.slot_, shm::PortWait{timeout, spin});
      if (local) {
        if (local->ok()) message.Forget();
        return Named(*local);
      }
    }
    const Ref ref = message.Disown();
    absl::Status s = channel_->SendToPortWaiting(name_, ref_, ref, timeout);
    if (!s.ok()) message = channel_->Adopt<T>(ref);
    return s;
  }

  // The oldest message, now owned by this session. NOT_FOUND if the port
  // has none. A message of another type than T is released (it was this
  // session's) and FAILED_PRECONDITION returned.
  absl::StatusOr<Owned<T>> TryReceive() { return Receive(std::chrono::nanoseconds::zero()); }
  // TryReceive that waits up to `timeout` for a message: first `spin`
  // looks (for the lowest latency, at the cost of a core meanwhile), then
  // asleep on the port's publish counter. DEADLINE_EXCEEDED when none came.
  absl::StatusOr<Owned<T>> Receive(std::chrono::nanoseconds timeout, uint32_t spin = 0) {
    std::optional<absl::StatusOr<Channel::SlotMessage>> local =
        channel_->ReceiveIntoSlot(ref_, shm::PortWait{timeout, spin});
    if (local) {
      if (!local->ok()) return Named(local->status());
      return Own((*local)->ref, (*local)->slot);
    }
    absl::StatusOr<Ref> ref = channel_->ReceiveFromPortWaiting(name_, ref_, timeout);
    if (!ref.ok()) return ref.status();
    return Own(*ref, internal::kNoSlot);
  }

  // The event-loop hook (doc/ports.md): while the returned object lives,
  // Arm(watch) makes `watch`'s descriptor readable once a message may have
  // arrived since the call (one-shot, as any FieldWatch watch). Drain with
  // TryReceive until NOT_FOUND, then Arm again. No thread per port: one
  // FieldWatch serves up to 127 ports (and fields). While it lives, every
  // send to the port makes one FUTEX_WAKE call (the wakers must know
  // someone sleeps). NOT_FOUND if the port is not mapped here.
  class Arrivals {
   public:
    Arrivals(Arrivals&& other) noexcept : ring_(std::exchange(other.ring_, std::nullopt)) {}
    Arrivals& operator=(Arrivals&&) = delete;
    ~Arrivals() {
      if (ring_) ring_->RemovePublishWatcher();
    }
    absl::StatusOr<uint64_t> Arm(shm::FieldWatch& watch) {
      shm::Scalar<uint32_t> published(ring_->published_word());
      return watch.Watch(published, published.load());
    }

   private:
    friend class Port;
    explicit Arrivals(shm::PortRing ring) : ring_(ring) { ring_->AddPublishWatcher(); }
    std::optional<shm::PortRing> ring_;
  };
  absl::StatusOr<Arrivals> WatchArrivals() {
    std::optional<shm::PortRing> ring = channel_->PortRingOf(ref_);
    if (!ring) {
      return absl::NotFoundError(absl::StrCat("port '", name_,
                                              "' is not mapped in this process (or damaged)"));
    }
    return Arrivals(*ring);
  }

  // The port's counters now (one call to the daemon).
  absl::StatusOr<PortInfo> Info() {
    absl::StatusOr<std::vector<PortInfo>> all = channel_->ListPorts();
    if (!all.ok()) return all.status();
    for (const PortInfo& p : *all) {
      if (p.name == name_) return p;
    }
    return absl::NotFoundError(absl::StrCat("port '", name_, "' is gone"));
  }

 private:
  friend class Channel;
  Port(std::shared_ptr<Channel> channel, std::string name, Ref ref)
      : channel_(std::move(channel)), name_(std::move(name)), ref_(ref) {}

  absl::Status Named(const absl::Status& s) const {
    if (s.ok()) return s;
    return absl::Status(s.code(), absl::StrCat("port '", name_, "': ", s.message()));
  }
  // A received reference as an Owned<T>; one of another type is dropped.
  absl::StatusOr<Owned<T>> Own(Ref ref, uint32_t slot) {
    absl::StatusOr<T> view = channel_->View<T>(ref);
    if (!view.ok()) {
      if (slot != internal::kNoSlot) {
        channel_->DropSlot(slot, ref);
      } else {
        (void)channel_->Release(std::vector<Ref>{ref});
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "port '", name_, "': the message ", ref.ToString(), " is not a '", std::string(T::kKey),
          "' (", view.status().message(), "); it was released"));
    }
    return Owned<T>(channel_, *view, /*sole=*/false, slot);
  }

  std::shared_ptr<Channel> channel_;
  std::string name_;
  Ref ref_;  // the port instance (its root's target when opened)
};

template <typename T>
absl::StatusOr<Port<T>> Channel::OpenPort(const std::string& name) {
  absl::StatusOr<Ref> ref = FindPort(name);
  if (!ref.ok()) return ref.status();
  // The session's record, so that moves (and the stock's refills, into
  // its slots from now on) need no call. Without one, ports use calls.
  (void)Moves();
  return Port<T>(shared_from_this(), name, *ref);
}

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_PORT_H_
