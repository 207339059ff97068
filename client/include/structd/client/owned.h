#ifndef STRUCTD_CLIENT_OWNED_H_
#define STRUCTD_CLIENT_OWNED_H_

#include <atomic>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "structd/client/struct.h"

namespace structd::client {

class Channel;

template <typename T>
class Port;

namespace internal {
// An Owned whose reference the session holds in its ledger, not in a slot
// of its session record (client/src/move_record.h).
inline constexpr uint32_t kNoSlot = UINT32_MAX;

// The Owneds of one reference that Clone() made in this process, and the
// one reference of the session they share (doc/lifecycle.md, "Clone").
// Heap memory of this process, never in shared memory. Deleted by the
// Owned that leaves it last.
struct SharedOwned {
  SharedOwned(std::shared_ptr<Channel> c, bool sole, uint32_t slot)
      : channel(std::move(c)), sole(sole), slot(slot) {}
  // Owneds of the group alive now. Starts at 2 (the original and its
  // first clone).
  std::atomic<uint64_t> owneds{2};
  std::shared_ptr<Channel> channel;
  // The reference came from an allocation and nothing was moved out of
  // the group since (see Owned::Unshare): the last Owned may recycle it.
  std::atomic<bool> sole;
  // Where the session holds the group's reference: its ledger (kNoSlot)
  // or a slot of its record (a message received through a port).
  const uint32_t slot;
};
}  // namespace internal

// One reference to an instance, owned by this process's session: the
// instance stays alive while the Owned does. Move-only; Clone() makes
// another Owned of the same reference. Destruction releases the
// reference. Neither calls the daemon on the caller's thread
// (doc/lifecycle.md): Clone() counts Owneds in this process only, and the
// session's reference is released when the last of them goes; an Owned
// that came from Allocate is then recycled in place into the process's
// stock when no other reference exists; any other release is queued and
// sent in batches. Dereferences to the view T.
//
// Thread safety: as a const object, an Owned may be read and cloned from
// several threads at once; moving, resetting or destroying it races with
// everything else done to it.
template <typename T>
class Owned {
 public:
  Owned() = default;
  Owned(Owned&& other) noexcept
      : channel_(std::move(other.channel_)),
        view_(std::exchange(other.view_, T())),
        shared_(other.shared_.load(std::memory_order_relaxed)),
        sole_(other.sole_),
        slot_(std::exchange(other.slot_, internal::kNoSlot)) {
    // Plain load and store, not an exchange: a move races nothing (moving
    // an Owned another thread is cloning is a bug of the caller's).
    other.shared_.store(nullptr, std::memory_order_relaxed);
    other.sole_ = false;
  }
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      Reset();
      channel_ = std::move(other.channel_);
      view_ = std::exchange(other.view_, T());
      shared_.store(other.shared_.load(std::memory_order_relaxed), std::memory_order_relaxed);
      sole_ = other.sole_;
      slot_ = std::exchange(other.slot_, internal::kNoSlot);
      other.shared_.store(nullptr, std::memory_order_relaxed);
      other.sole_ = false;
    }
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { Reset(); }

  const T& operator*() const { return view_; }
  const T* operator->() const { return &view_; }
  const T& get() const { return view_; }
  Ref ref() const { return view_.ref(); }
  explicit operator bool() const { return static_cast<bool>(view_); }

  // Another Owned of the same reference: an atomic increment of a count
  // in this process's memory (the first clone allocates that count).
  absl::StatusOr<Owned<T>> Clone() const;
  // Releases the reference now (the session's, once no clone is left).
  void Reset();
  // Stops managing the reference and returns it: the session keeps owning
  // it until Channel::Release(ref), a Store with move, or the session ends.
  // The ref is this Owned's own, whatever clones of it do afterwards.
  Ref Disown() {
    Unshare();
    LeaveSlot();
    channel_.reset();
    sole_ = false;
    return std::exchange(view_, T()).ref();
  }

 private:
  friend class Channel;
  friend class RefStores;
  friend class Port<T>;
  // `sole`: the reference came from an allocation, so this is the only
  // Owned of it in the process (other processes may have references).
  // `slot`: the session holds it in that slot of its record.
  Owned(std::shared_ptr<Channel> channel, T view, bool sole = false,
        uint32_t slot = internal::kNoSlot)
      : channel_(std::move(channel)), view_(view), sole_(sole), slot_(slot) {}
  // A clone: a member of `group`, which already counts it.
  Owned(internal::SharedOwned* group, T view) : view_(view), shared_(group) {}

  // Gives this Owned a reference of the session's of its own, out of its
  // clone group (queued retain), and marks the group's reference as no
  // longer recyclable in place: the ref is about to leave this Owned's
  // management (Disown, a Store with move). Afterwards channel_ is set
  // and shared_ null. A no-op for an Owned that was never cloned.
  void Unshare();
  // After Unshare: if the reference is held in a slot of the session's
  // record, moves it to the session's ledger (a queued retain, then the
  // slot given up), where the calls that take a session's reference
  // (Release, a Store with move, SendToPort) find it.
  void LeaveSlot();
  // Drops the session's reference this Owned (or its group) held: from
  // its slot if it has one (`slot`), else recycled in place if `sole` (it
  // came from an allocation, nothing else holds it), else queued for
  // release.
  void DropReference(Channel& channel, bool sole, uint32_t slot) const;
  // Empties this Owned without dropping its reference (a port took it from
  // its slot). REQUIRES: no clone group.
  void Forget() {
    channel_.reset();
    view_ = T();
    sole_ = false;
    slot_ = internal::kNoSlot;
  }
  // The channel, for an Owned that was never cloned (the original of a
  // group keeps its copy; clones have none: the group holds it).
  std::shared_ptr<Channel> channel_;
  T view_;
  // The clone group, once Clone() was called on this Owned or this is a
  // clone. Installed by the first Clone(), which may run on a const
  // Owned from several threads at once: hence mutable and atomic.
  mutable std::atomic<internal::SharedOwned*> shared_{nullptr};
  // Without a group: the reference came from an allocation (see the
  // constructor). With one, the group's `sole` says it instead.
  bool sole_ = false;
  // Without a group: where the session holds the reference (kNoSlot: its
  // ledger). With one, the group's `slot` says it instead.
  uint32_t slot_ = internal::kNoSlot;
};

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_OWNED_H_
