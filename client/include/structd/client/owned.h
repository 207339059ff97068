#ifndef STRUCTD_CLIENT_OWNED_H_
#define STRUCTD_CLIENT_OWNED_H_

#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "structd/client/struct.h"

namespace structd::client {

class Channel;

// One reference to an instance, owned by this process's session: the
// instance stays alive while the Owned does. Move-only; Clone() takes a
// second reference (a Retain call). Destruction releases the reference (a
// Release call; errors are ignored: a session that ended has released it
// already). Dereferences to the view T.
template <typename T>
class Owned {
 public:
  Owned() = default;
  Owned(Owned&& other) noexcept
      : channel_(std::move(other.channel_)), view_(std::exchange(other.view_, T())) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      Reset();
      channel_ = std::move(other.channel_);
      view_ = std::exchange(other.view_, T());
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
    return std::exchange(view_, T()).ref();
  }

 private:
  friend class Channel;
  Owned(std::shared_ptr<Channel> channel, T view)
      : channel_(std::move(channel)), view_(view) {}

  std::shared_ptr<Channel> channel_;
  T view_;
};

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_OWNED_H_
