#include "structd/shm/field.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "structd/base/posix.h"

namespace structd::shm {
namespace {

// State word of a bytes field.
constexpr uint64_t kActiveBit = 1;
constexpr uint64_t kVersionMask = 0xFFFFFFFEull;  // bits 31..1
constexpr int kOwnerShift = 32;

uint32_t Owner(uint64_t s) { return static_cast<uint32_t>(s >> kOwnerShift); }
uint64_t Version(uint64_t s) { return s & kVersionMask; }

uint32_t SlotWords(uint32_t capacity) { return (capacity + 7) / 8; }

// True if `pid` names no live process. A pid of another pid namespace is
// not visible here; see doc/arena-format.md (limits).
bool ProcessIsGone(uint32_t pid) {
  return kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

absl::Status BytesField::Read(std::string& out) const {
  auto* state = reinterpret_cast<uint64_t*>(p_);
  const uint32_t words = SlotWords(capacity_);
  for (int attempt = 0;; ++attempt) {
    uint64_t s1 = std::atomic_ref<uint64_t>(*state).load(
        std::memory_order_acquire);
    auto* slot = reinterpret_cast<uint64_t*>(
        p_ + 8 + (s1 & kActiveBit) * (8 + uint64_t{words} * 8));
    uint64_t len =
        std::atomic_ref<uint64_t>(slot[0]).load(std::memory_order_relaxed);
    bool len_ok = len <= capacity_;
    if (len_ok) {
      out.resize(len);
      uint32_t n = static_cast<uint32_t>((len + 7) / 8);
      for (uint32_t i = 0; i < n; ++i) {
        uint64_t w = std::atomic_ref<uint64_t>(slot[1 + i]).load(
            std::memory_order_relaxed);
        std::memcpy(out.data() + i * 8, &w, std::min<uint64_t>(8, len - i * 8));
      }
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    uint64_t s2 =
        std::atomic_ref<uint64_t>(*state).load(std::memory_order_relaxed);
    if (Version(s1) == Version(s2) && (s1 & kActiveBit) == (s2 & kActiveBit)) {
      if (len_ok) return absl::OkStatus();
      return absl::DataLossError(absl::StrFormat(
          "bytes field: stored length %d exceeds capacity %d (the arena was "
          "damaged; rewrite the field)",
          len, capacity_));
    }
    if (attempt > 64) std::this_thread::yield();
  }
}

bool BytesField::ForgetWriter() {
  std::atomic_ref<uint64_t> st(*reinterpret_cast<uint64_t*>(p_));
  const uint64_t cur = st.load(std::memory_order_relaxed);
  st.store(cur & 0xFFFFFFFFull, std::memory_order_release);
  return Owner(cur) != 0;
}

absl::Status BytesField::Write(std::string_view value) {
  if (value.size() > capacity_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bytes field: value of %d bytes exceeds the capacity of %d (shorten "
        "it, or declare a larger field)",
        value.size(), capacity_));
  }
  auto* state = reinterpret_cast<uint64_t*>(p_);
  std::atomic_ref<uint64_t> st(*state);
  const uint64_t me = static_cast<uint64_t>(base::CachedPid()) << kOwnerShift;
  const uint32_t words = SlotWords(capacity_);
  for (;;) {
    uint64_t cur = st.load(std::memory_order_relaxed);
    for (int attempt = 0;; ++attempt) {
      uint32_t owner = Owner(cur);
      if (owner == 0 || (attempt > 100 && ProcessIsGone(owner))) {
        // Take the lock (or take it over from a dead writer: its partial
        // write went to the inactive slot, so nothing visible is lost).
        uint64_t locked = (cur & 0xFFFFFFFFull) | me;
        if (st.compare_exchange_weak(cur, locked, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
          cur = locked;
          break;
        }
        continue;
      }
      if (attempt > 100) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      } else if (attempt > 10) {
        std::this_thread::yield();
      }
      cur = st.load(std::memory_order_relaxed);
    }
    // Order the lock before the slot writes for readers (seqlock writer
    // fence): a reader that sees any of the writes below sees the new state.
    std::atomic_thread_fence(std::memory_order_release);
    uint64_t target = (cur & kActiveBit) ^ 1;
    auto* slot = reinterpret_cast<uint64_t*>(
        p_ + 8 + target * (8 + uint64_t{words} * 8));
    std::atomic_ref<uint64_t>(slot[0]).store(value.size(),
                                             std::memory_order_relaxed);
    uint32_t n = static_cast<uint32_t>((value.size() + 7) / 8);
    for (uint32_t i = 0; i < n; ++i) {
      uint64_t w = 0;
      std::memcpy(&w, value.data() + i * 8,
                  std::min<size_t>(8, value.size() - i * 8));
      std::atomic_ref<uint64_t>(slot[1 + i]).store(w,
                                                   std::memory_order_relaxed);
    }
    uint64_t next_version = (Version(cur) + 2) & kVersionMask;
    // Publish only if we still hold the lock. If another writer took it
    // over (it believed us dead), our copy may be mixed with its: publish
    // nothing and write again.
    uint64_t expected = cur;
    if (st.compare_exchange_strong(expected, next_version | target,
                                   std::memory_order_release,
                                   std::memory_order_relaxed)) {
      return absl::OkStatus();
    }
  }
}

absl::Status ArrayIndexError(uint32_t index, uint32_t size) {
  return absl::OutOfRangeError(absl::StrFormat(
      "array: index %d out of range [0, %d) (check the index against "
      "size())",
      index, size));
}

absl::StatusOr<FieldHandle> FieldHandle::Bind(const Layout& layout,
                                              std::string_view name,
                                              FieldKind kind,
                                              FieldKind element) {
  std::optional<size_t> i = layout.FindField(name);
  if (!i) {
    return absl::NotFoundError(absl::StrFormat(
        "field '%s': not in this layout (fields are listed by 'structctl "
        "layout')",
        name));
  }
  const Field& f = layout.fields()[*i];
  bool same_kind = f.kind() == kind;
  if (kind == FieldKind::kBytes || kind == FieldKind::kString) {
    same_kind = f.kind() == FieldKind::kBytes || f.kind() == FieldKind::kString;
  }
  if (kind == FieldKind::kArray) same_kind = same_kind && f.spec.element == element;
  if (!same_kind) {
    FieldSpec wanted;
    wanted.kind = kind;
    wanted.element = element;
    wanted.count = f.spec.count;
    return absl::InvalidArgumentError(absl::StrFormat(
        "field '%s': is %s, not %s (use the accessor for %s)", name,
        FieldTypeName(f.spec), FieldTypeName(wanted), FieldTypeName(f.spec)));
  }
  FieldHandle h;
  h.offset_ = f.offset;
  h.count_ = f.spec.count;
  h.kind_ = f.kind();
  return h;
}

}  // namespace structd::shm
