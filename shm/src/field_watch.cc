#include "structd/shm/field_watch.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "futex.h"

namespace structd::shm {
namespace {

using internal::FutexWord;

// Without futex_waitv (a kernel before 5.16, or a seccomp filter that does
// not know it) the thread looks at every watched field this often.
constexpr std::chrono::milliseconds kPollSlice{1};
std::atomic<bool> g_force_polling{false};

uint64_t LoadBits(const void* address, uint32_t size) {
  return size == 4 ? internal::LoadWordAcquire(static_cast<const uint32_t*>(address))
                   : internal::LoadWordAcquire(static_cast<const uint64_t*>(address));
}

}  // namespace

namespace internal {
// Tests only: makes every FieldWatch poll as it does without futex_waitv.
void ForceFieldWatchPollingForTesting(bool on) {
  g_force_polling.store(on, std::memory_order_relaxed);
}
}  // namespace internal

absl::StatusOr<std::unique_ptr<FieldWatch>> FieldWatch::Create() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "FieldWatch: eventfd: ", std::strerror(errno), " (too many open files?)"));
  }
  std::unique_ptr<FieldWatch> watch(new FieldWatch(base::UniqueFd(fd)));
  watch->thread_ = std::thread([w = watch.get()] { w->Run(); });
  return watch;
}

FieldWatch::FieldWatch(base::UniqueFd event_fd) : event_fd_(std::move(event_fd)) {}

FieldWatch::~FieldWatch() {
  {
    base::MutexLock lock(&mu_);
    stopping_ = true;
    InterruptLocked();
  }
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<uint64_t> FieldWatch::WatchBits(const void* address, uint32_t size,
                                               uint64_t seen) {
  if (address == nullptr || reinterpret_cast<uintptr_t>(address) % size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "FieldWatch::Watch: the field at %p is not aligned to its %d bytes (watch a "
        "field of an instance, through its view)",
        address, size));
  }
  const size_t needs = size / 4;
  base::MutexLock lock(&mu_);
  if (words_ + needs > kMaxWords) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "FieldWatch::Watch: this watch already sleeps on %d of its %d futex words (a "
        "4-byte field takes 1, an 8-byte field 2): watch with another FieldWatch",
        words_, kMaxWords));
  }
  const uint64_t id = next_id_++;
  armed_.push_back({id, address, size, seen});
  words_ += needs;
  // A field that already differs fires now, without waiting for the thread.
  if (FireChangedLocked()) {
    Signal();
  } else {
    InterruptLocked();
  }
  return id;
}

bool FieldWatch::Unwatch(uint64_t id) {
  base::MutexLock lock(&mu_);
  auto it = std::find_if(armed_.begin(), armed_.end(), [id](const Armed& a) { return a.id == id; });
  if (it == armed_.end()) return false;
  words_ -= it->size / 4;
  armed_.erase(it);
  InterruptLocked();
  return true;
}

std::vector<uint64_t> FieldWatch::TakeFired() {
  // Reset the descriptor first, then take the list: a watch that fires in
  // between is either taken now or signalled again after (Signal follows
  // every append), never lost.
  uint64_t ignored;
  while (read(event_fd_.get(), &ignored, sizeof ignored) < 0 && errno == EINTR) {
  }
  base::MutexLock lock(&mu_);
  std::vector<uint64_t> fired;
  fired.swap(fired_);
  return fired;
}

size_t FieldWatch::armed() const {
  base::MutexLock lock(&mu_);
  return armed_.size();
}

size_t FieldWatch::words() const {
  base::MutexLock lock(&mu_);
  return words_;
}

bool FieldWatch::FireChangedLocked() {
  bool any = false;
  for (auto it = armed_.begin(); it != armed_.end();) {
    if (LoadBits(it->address, it->size) != it->seen) {
      fired_.push_back(it->id);
      words_ -= it->size / 4;
      it = armed_.erase(it);
      any = true;
    } else {
      ++it;
    }
  }
  return any;
}

void FieldWatch::Signal() {
  const uint64_t one = 1;
  // EAGAIN only when the counter is near 2^64: readable anyway.
  while (write(event_fd_.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void FieldWatch::InterruptLocked() {
  std::atomic_ref<uint32_t>(control_).fetch_add(1, std::memory_order_release);
  internal::FutexWake(&control_, 1);
}

void FieldWatch::Run() {
  bool polling = false;
  std::vector<FutexWord> words;
  words.reserve(kMaxWords + 1);
  for (;;) {
    words.clear();
    bool fired = false;
    {
      base::MutexLock lock(&mu_);
      if (stopping_) return;
      // Read under mu_, where every change of armed_ bumps it: a change
      // after this makes the sleep below return at once.
      const uint32_t control = std::atomic_ref<uint32_t>(control_).load(std::memory_order_acquire);
      words.push_back({&control_, control});
      fired = FireChangedLocked();
      // The kernel compares each word with what the watch saw: a store and
      // Notify between the look above and the sleep make the sleep return
      // (EAGAIN), so no wake-up is lost.
      for (const Armed& a : armed_) {
        auto* halves = static_cast<uint32_t*>(const_cast<void*>(a.address));
        words.push_back({&halves[0], static_cast<uint32_t>(a.seen)});
        if (a.size == 8) words.push_back({&halves[1], static_cast<uint32_t>(a.seen >> 32)});
      }
    }
    if (fired) Signal();
    if (words.size() == 1) {  // nothing armed: sleep until Watch or the end
      internal::FutexWait(&control_, words[0].expected, internal::kNoDeadline);
      continue;
    }
    if (!polling && !g_force_polling.load(std::memory_order_relaxed)) {
      const int rc = internal::FutexWaitAny(words, internal::kNoDeadline);
      if (rc == 0 || rc == EAGAIN || rc == EINTR || rc == ETIMEDOUT) continue;
      // ENOSYS (a kernel before 5.16), EPERM (a seccomp filter): never
      // again, or the loop would spin. EFAULT: a field unwatched and
      // unmapped since the copy above (Unwatch does not wait for this
      // thread); the look below, one slice later, takes a fresh copy.
      if (rc == ENOSYS || rc == EPERM) polling = true;
    }
    const internal::FutexDeadline slice = std::chrono::steady_clock::now() + kPollSlice;
    internal::FutexWait(&control_, words[0].expected, slice);
  }
}

}  // namespace structd::shm
