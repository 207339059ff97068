#ifndef STRUCTD_CLIENT_OWNED_H_
#define STRUCTD_CLIENT_OWNED_H_

#include <atomic>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "structd/client/struct.h"

namespace structd::client {

class Channel;

// One reference to an instance, owned by this process's session: the
// instance stays alive while the Owned does. Move-only; Clone() takes a
// second reference. Destruction releases the reference. Neither calls the
// daemon on the caller's thread (doc/lifecycle.md): an Owned that came
// from Allocate and was never cloned is recycled in place into the
// process's stock when no other reference exists; any other release is
// queued and sent in batches. Dereferences to the view T.
template <typename T>
class Owned {
 public:
  Owned() = default;
  Owned(Owned&& other) noexcept
      : channel_(std::move(other.channel_)),
        view_(std::exchange(other.view_, T())),
        sole_(other.sole_.load(std::memory_order_relaxed)) {
    // Plain load and store, not an exchange: a move races nothing (moving
    // an Owned another thread is cloning is a bug of the caller's), and a
    // locked instruction here would double the cost of Clone().
    other.sole_.store(false, std::memory_order_relaxed);
  }
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      Reset();
      channel_ = std::move(other.channel_);
      view_ = std::exchange(other.view_, T());
      sole_.store(other.sole_.load(std::memory_order_relaxed), std::memory_order_relaxed);
      other.sole_.store(false, std::memory_order_relaxed);
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

  // A second owned reference to the same instance.
  absl::StatusOr<Owned<T>> Clone() const;
  // Releases the reference now.
  void Reset();
  // Stops managing the reference and returns it: the session keeps owning
  // it until Channel::Release(ref), a Store with move, or the session ends.
  Ref Disown() {
    channel_.reset();
    sole_.store(false, std::memory_order_relaxed);
    return std::exchange(view_, T()).ref();
  }

 private:
  friend class Channel;
  friend class RefStores;
  // `sole`: the reference came from an allocation, so this is the only
  // Owned of it in the process (other processes may have references).
  Owned(std::shared_ptr<Channel> channel, T view, bool sole = false)
      : channel_(std::move(channel)), view_(view), sole_(sole) {}

  std::shared_ptr<Channel> channel_;
  T view_;
  // The only Owned of its reference in this process: true from Allocate
  // until a Clone (which may run on a const Owned, from several threads at
  // once: hence mutable and atomic) or a Store that moves it into a field.
  mutable std::atomic<bool> sole_{false};
};

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_OWNED_H_
