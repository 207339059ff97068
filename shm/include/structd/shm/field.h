#ifndef STRUCTD_SHM_FIELD_H_
#define STRUCTD_SHM_FIELD_H_

// Field accessors over resolved instances.
//
// Accessors are views: a pointer into the mapped arena plus what is needed
// to act on it. They own nothing, allocate nothing, take no lock and make
// no system call on the fast path. They stay valid while the Arena that
// resolved the instance is open.
//
// Every scalar access is atomic (std::atomic_ref), relaxed unless the caller
// passes a stronger order, so a read never tears (invariant 3). Ref fields
// default to acquire/release: a ref read from a field can be resolved at
// once. bytes[N]/string[N] use a double-buffered sequence lock: readers never
// wait, never see a torn value, and a writer killed mid-write leaves the
// previous value intact (the next writer takes over its lock).

#include <atomic>
#include <bit>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/statusor.h"
#include "structd/shm/arena.h"
#include "structd/shm/field_wait.h"
#include "structd/shm/layout.h"
#include "structd/shm/ref.h"

namespace structd::shm {

// The FieldKind that stores a C++ type.
template <typename T>
constexpr FieldKind KindOf() {
  if constexpr (std::is_same_v<T, bool>) return FieldKind::kBool;
  else if constexpr (std::is_same_v<T, int8_t>) return FieldKind::kI8;
  else if constexpr (std::is_same_v<T, int16_t>) return FieldKind::kI16;
  else if constexpr (std::is_same_v<T, int32_t>) return FieldKind::kI32;
  else if constexpr (std::is_same_v<T, int64_t>) return FieldKind::kI64;
  else if constexpr (std::is_same_v<T, uint8_t>) return FieldKind::kU8;
  else if constexpr (std::is_same_v<T, uint16_t>) return FieldKind::kU16;
  else if constexpr (std::is_same_v<T, uint32_t>) return FieldKind::kU32;
  else if constexpr (std::is_same_v<T, uint64_t>) return FieldKind::kU64;
  else if constexpr (std::is_same_v<T, float>) return FieldKind::kF32;
  else if constexpr (std::is_same_v<T, double>) return FieldKind::kF64;
  else static_assert(sizeof(T) == 0, "not a scalar field type");
}

template <typename T>
concept ScalarType = std::is_same_v<T, bool> || std::is_integral_v<T> ||
                     std::is_floating_point_v<T>;

// One scalar field (or array element) of type T.
template <ScalarType T>
class Scalar {
 public:
  // REQUIRES: `p` is suitably aligned and inside a mapped instance.
  explicit Scalar(void* p) : p_(static_cast<T*>(p)) {}

  T load(std::memory_order order = std::memory_order_relaxed) const {
    return ref().load(order);
  }
  void store(T value, std::memory_order order = std::memory_order_relaxed) {
    ref().store(value, order);
  }
  T exchange(T value, std::memory_order order = std::memory_order_relaxed) {
    return ref().exchange(value, order);
  }
  // Strong CAS. On failure `expected` receives the current value.
  bool compare_exchange(T& expected, T desired,
                        std::memory_order order = std::memory_order_relaxed) {
    return ref().compare_exchange_strong(expected, desired, order);
  }
  T fetch_add(T delta, std::memory_order order = std::memory_order_relaxed)
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  {
    return ref().fetch_add(delta, order);
  }
  T fetch_sub(T delta, std::memory_order order = std::memory_order_relaxed)
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  {
    return ref().fetch_sub(delta, order);
  }
  // Blocks until the field no longer holds `seen` (compared bit for bit:
  // for floats, -0.0 differs from 0.0 and a NaN equals itself) and returns
  // what it then holds, loaded with acquire. DeadlineExceeded if it still
  // holds `seen` after `timeout`. The waiter sleeps in the kernel and is
  // woken only by Notify: a writer stores, then calls Notify (a store
  // alone wakes nobody, as with Atomics.wait). Any process mapping the
  // channel may wait or notify. 4- and 8-byte fields.
  absl::StatusOr<T> WaitChanged(T seen,
                                std::chrono::nanoseconds timeout = kWaitForever) const
    requires(sizeof(T) == 4 || sizeof(T) == 8)
  {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    absl::StatusOr<Bits> now = WaitWhileEquals(reinterpret_cast<const Bits*>(p_),
                                               std::bit_cast<Bits>(seen), timeout);
    if (!now.ok()) return now.status();
    return std::bit_cast<T>(*now);
  }
  // Wakes up to `count` waiters of this field (in any process) and returns
  // how many it woke.
  int Notify(int count) const
    requires(sizeof(T) == 4 || sizeof(T) == 8)
  {
    return NotifyFieldWaiters(p_, count);
  }
  int NotifyAll() const
    requires(sizeof(T) == 4 || sizeof(T) == 8)
  {
    return NotifyFieldWaiters(p_, kNotifyAll);
  }
  T* address() const { return p_; }

 private:
  std::atomic_ref<T> ref() const { return std::atomic_ref<T>(*p_); }
  T* p_;
};

// A ref field. Storing a Ref here does not change any refcount: the layer
// above (daemon, client library) decides who owns what.
class RefField {
 public:
  explicit RefField(void* p) : p_(static_cast<uint64_t*>(p)) {}
  // The field's word in shared memory.
  uint64_t* word() const { return p_; }

  Ref load(std::memory_order order = std::memory_order_acquire) const {
    return Ref::FromBits(std::atomic_ref<uint64_t>(*p_).load(order));
  }
  void store(Ref value, std::memory_order order = std::memory_order_release) {
    std::atomic_ref<uint64_t>(*p_).store(value.bits(), order);
  }
  Ref exchange(Ref value,
               std::memory_order order = std::memory_order_acq_rel) {
    return Ref::FromBits(
        std::atomic_ref<uint64_t>(*p_).exchange(value.bits(), order));
  }
  bool compare_exchange(Ref& expected, Ref desired,
                        std::memory_order order = std::memory_order_acq_rel) {
    uint64_t e = expected.bits();
    bool ok = std::atomic_ref<uint64_t>(*p_).compare_exchange_strong(
        e, desired.bits(), order);
    expected = Ref::FromBits(e);
    return ok;
  }

 private:
  uint64_t* p_;
};

// bytes[N] and string[N]. On-shm: an 8-byte state word (writer pid in the
// high 32 bits, version in bits 31..1, active slot in bit 0), then two
// slots of {8-byte length, N bytes rounded up to 8}.
class BytesField {
 public:
  BytesField(void* p, uint32_t capacity)
      : p_(static_cast<uint8_t*>(p)), capacity_(capacity) {}

  uint32_t capacity() const { return capacity_; }

  // Copies the current value into `out` (resized). Never blocks on a writer;
  // retries while writes overlap the copy. DataLoss if the stored length is
  // larger than the capacity (the arena was scribbled on).
  absl::Status Read(std::string& out) const;
  absl::StatusOr<std::string> Read() const {
    std::string s;
    absl::Status st = Read(s);
    if (!st.ok()) return st;
    return s;
  }
  // Replaces the value. InvalidArgument if it exceeds the capacity. Waits
  // while another live writer holds the field; takes the lock over from a
  // writer that died.
  absl::Status Write(std::string_view value);
  // Releases the writer lock whoever holds it, keeping the active slot (the
  // last complete value). For a field whose processes are all gone (a
  // restored snapshot). Returns true if a writer held it.
  bool ForgetWriter();

 private:
  uint8_t* p_;
  uint32_t capacity_;
};

// array<T, N>.
template <ScalarType T>
class Array {
 public:
  Array(void* p, uint32_t size) : p_(static_cast<T*>(p)), size_(size) {}
  uint32_t size() const { return size_; }
  // OutOfRange if i >= size().
  absl::StatusOr<Scalar<T>> at(uint32_t i) const;

 private:
  T* p_;
  uint32_t size_;
};

// Pre-resolved field handle: the field's offset and shape are looked up in
// the layout once (by name, with a kind check), and then applied to any
// instance of that layout with no lookup.
class FieldHandle {
 public:
  // NotFound if the layout has no field `name`; InvalidArgument if its kind
  // is not `kind` (for kArray, `element` must match too).
  static absl::StatusOr<FieldHandle> Bind(const Layout& layout,
                                          std::string_view name,
                                          FieldKind kind,
                                          FieldKind element = FieldKind::kU64);
  template <ScalarType T>
  static absl::StatusOr<FieldHandle> BindScalar(const Layout& layout,
                                                std::string_view name) {
    return Bind(layout, name, KindOf<T>());
  }

  uint32_t offset() const { return offset_; }
  uint32_t count() const { return count_; }
  FieldKind kind() const { return kind_; }

  // REQUIRES: `instance` has the layout this handle was bound to, and the
  // handle's kind matches the accessor.
  template <ScalarType T>
  Scalar<T> scalar(const InstancePtr& instance) const {
    assert(kind_ == KindOf<T>() && "FieldHandle::scalar<T>: T does not match");
    return Scalar<T>(instance.payload() + offset_);
  }
  RefField ref(const InstancePtr& instance) const {
    return RefField(instance.payload() + offset_);
  }
  BytesField bytes(const InstancePtr& instance) const {
    return BytesField(instance.payload() + offset_, count_);
  }
  template <ScalarType T>
  Array<T> array(const InstancePtr& instance) const {
    return Array<T>(instance.payload() + offset_, count_);
  }
  void* address(const InstancePtr& instance) const {
    return instance.payload() + offset_;
  }

 private:
  uint32_t offset_ = 0;
  uint32_t count_ = 0;
  FieldKind kind_ = FieldKind::kU64;
};

absl::Status ArrayIndexError(uint32_t index, uint32_t size);

template <ScalarType T>
absl::StatusOr<Scalar<T>> Array<T>::at(uint32_t i) const {
  if (i >= size_) return ArrayIndexError(i, size_);
  return Scalar<T>(p_ + i);
}

}  // namespace structd::shm

#endif  // STRUCTD_SHM_FIELD_H_
