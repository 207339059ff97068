#ifndef STRUCTD_CLIENT_STRUCT_H_
#define STRUCTD_CLIENT_STRUCT_H_

// Shared structs described in C++. One macro turns a field list into
//   - the field specs to register (key = the struct's name),
//   - compile-time field offsets (declaration order, natural alignment:
//     the rule of shm::Layout::Compute, checked against it when a type is
//     bound), and
//   - a view class with one typed accessor per field.
//
//   #define POINT_FIELDS(F) F(x, f64) F(y, f64) F(label, string(16))
//   STRUCTD_STRUCT(Point, POINT_FIELDS);
//
//   Point p = ...;               // a view (see Channel::View, Owned<T>)
//   p.x().store(3.0);            // shm::Scalar<double>: atomic, no RPC
//   double y = p.y().load();
//   p.label().Write("origin");   // shm::BytesField: torn-free
//
// Field types: bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64, string(N),
// bytes(N), array(T, N) for a scalar T, ref(Type) (a typed reference:
// read it here, store it with Channel::Store), anyref, mutex, condition.
//
// A view is two words (the instance's address and its ref), trivially
// copyable, and owns nothing: keep an Owned<T> (or a root, or a ref field
// of a live instance) while you use it.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "structd/shm/arena.h"
#include "structd/shm/field.h"
#include "structd/shm/format.h"
#include "structd/shm/layout.h"
#include "structd/shm/sync.h"

namespace structd::client {

using shm::Ref;

// The base of every generated struct view.
class StructView {
 public:
  StructView() = default;
  explicit StructView(const shm::InstancePtr& p) : block_(p.block()), ref_(p.ref()) {}

  Ref ref() const { return ref_; }
  explicit operator bool() const { return block_ != nullptr; }
  // The registry's index of the instance's type, from its header: how
  // behavior tables are found. 0 once the instance has been freed.
  uint32_t type_index() const {
    return reinterpret_cast<const shm::InstanceHeader*>(block_)->type_index.load(
        std::memory_order_acquire);
  }

 protected:
  uint8_t* payload() const { return block_ + shm::kInstanceHeaderSize; }

 private:
  friend class Channel;  // recycles the block of a sole Owned's view
  uint8_t* block_ = nullptr;
  Ref ref_;
};

// A ref field seen through a view. Reading is lock-free; writing goes
// through Channel::Store, because a ref field owns a reference and only
// the daemon counts references.
template <typename Target>
class RefTo {
 public:
  RefTo(void* p, Ref owner, uint32_t field_index)
      : field_(p), owner_(owner), field_index_(field_index) {}
  Ref load(std::memory_order order = std::memory_order_acquire) const {
    return field_.load(order);
  }
  // The instance holding the field, and the field's index in its layout.
  Ref owner() const { return owner_; }
  uint32_t field_index() const { return field_index_; }

 private:
  friend class Channel;  // stores into the word in shared memory
  shm::RefField field_;
  Ref owner_;
  uint32_t field_index_;
};

namespace kinds {

template <shm::ScalarType T>
struct Scalar {
  using Type = T;
  using Accessor = shm::Scalar<T>;
  static constexpr uint32_t kSize = sizeof(T);
  static constexpr uint32_t kAlign = sizeof(T);
  static shm::FieldSpec Spec(std::string name) {
    return shm::FieldSpec::Scalar(std::move(name), shm::KindOf<T>());
  }
  static Accessor Make(uint8_t* p, Ref, uint32_t) { return Accessor(p); }
};

template <uint32_t N>
struct String {
  static_assert(N > 0, "string(N) needs N >= 1");
  using Accessor = shm::BytesField;
  static constexpr uint32_t kSize = static_cast<uint32_t>(shm::BytesFieldSize(N));
  static constexpr uint32_t kAlign = 8;
  static shm::FieldSpec Spec(std::string name) {
    return shm::FieldSpec::String(std::move(name), N);
  }
  static Accessor Make(uint8_t* p, Ref, uint32_t) { return Accessor(p, N); }
};

template <uint32_t N>
struct Bytes : String<N> {
  static shm::FieldSpec Spec(std::string name) {
    return shm::FieldSpec::Bytes(std::move(name), N);
  }
};

template <typename Element, uint32_t N>
struct Array {
  static_assert(N > 0, "array(T, N) needs N >= 1");
  using T = typename Element::Type;
  using Accessor = shm::Array<T>;
  static constexpr uint32_t kSize = sizeof(T) * N;
  static constexpr uint32_t kAlign = sizeof(T);
  static shm::FieldSpec Spec(std::string name) {
    return shm::FieldSpec::Array(std::move(name), shm::KindOf<T>(), N);
  }
  static Accessor Make(uint8_t* p, Ref, uint32_t) { return Accessor(p, N); }
};

template <typename Target>
struct RefKind {
  using Accessor = RefTo<Target>;
  static constexpr uint32_t kSize = 8;
  static constexpr uint32_t kAlign = 8;
  // Registered untyped: tokens are per channel and unknown at compile
  // time. The view type gives the C++ side its type.
  static shm::FieldSpec Spec(std::string name) { return shm::FieldSpec::Ref(std::move(name)); }
  static Accessor Make(uint8_t* p, Ref owner, uint32_t index) {
    return Accessor(p, owner, index);
  }
};

struct Mutex {
  using Accessor = shm::MutexField;
  static constexpr uint32_t kSize = shm::kMutexFieldSize;
  static constexpr uint32_t kAlign = 8;
  static shm::FieldSpec Spec(std::string name) { return shm::FieldSpec::Mutex(std::move(name)); }
  static Accessor Make(uint8_t* p, Ref, uint32_t) { return Accessor(p); }
};

struct Condition {
  using Accessor = shm::ConditionField;
  static constexpr uint32_t kSize = shm::kConditionFieldSize;
  static constexpr uint32_t kAlign = 4;
  static shm::FieldSpec Spec(std::string name) {
    return shm::FieldSpec::Condition(std::move(name));
  }
  static Accessor Make(uint8_t* p, Ref, uint32_t) { return Accessor(p); }
};

}  // namespace kinds

namespace internal {

struct Shape {
  uint32_t size;
  uint32_t align;
};

// Offsets in declaration order with natural alignment.
template <size_t N>
constexpr std::array<uint32_t, N> Place(const std::array<Shape, N>& shapes) {
  std::array<uint32_t, N> offsets{};
  uint32_t end = 0;
  for (size_t i = 0; i < N; ++i) {
    uint32_t a = shapes[i].align;
    offsets[i] = (end + a - 1) / a * a;
    end = offsets[i] + shapes[i].size;
  }
  return offsets;
}

}  // namespace internal
}  // namespace structd::client

// Field type names -> kinds (the second argument of F(name, type)).
#define STRUCTD_KIND_bool ::structd::client::kinds::Scalar<bool>
#define STRUCTD_KIND_i8 ::structd::client::kinds::Scalar<int8_t>
#define STRUCTD_KIND_i16 ::structd::client::kinds::Scalar<int16_t>
#define STRUCTD_KIND_i32 ::structd::client::kinds::Scalar<int32_t>
#define STRUCTD_KIND_i64 ::structd::client::kinds::Scalar<int64_t>
#define STRUCTD_KIND_u8 ::structd::client::kinds::Scalar<uint8_t>
#define STRUCTD_KIND_u16 ::structd::client::kinds::Scalar<uint16_t>
#define STRUCTD_KIND_u32 ::structd::client::kinds::Scalar<uint32_t>
#define STRUCTD_KIND_u64 ::structd::client::kinds::Scalar<uint64_t>
#define STRUCTD_KIND_f32 ::structd::client::kinds::Scalar<float>
#define STRUCTD_KIND_f64 ::structd::client::kinds::Scalar<double>
#define STRUCTD_KIND_string(n) ::structd::client::kinds::String<n>
#define STRUCTD_KIND_bytes(n) ::structd::client::kinds::Bytes<n>
#define STRUCTD_KIND_array(t, n) ::structd::client::kinds::Array<STRUCTD_KIND_##t, n>
#define STRUCTD_KIND_ref(T) ::structd::client::kinds::RefKind<T>
#define STRUCTD_KIND_anyref ::structd::client::kinds::RefKind<::structd::client::StructView>
#define STRUCTD_KIND_mutex ::structd::client::kinds::Mutex
#define STRUCTD_KIND_condition ::structd::client::kinds::Condition

#define STRUCTD_INTERNAL_ENUM(name, type) kField_##name,
#define STRUCTD_INTERNAL_SHAPE(name, type) \
  ::structd::client::internal::Shape{STRUCTD_KIND_##type::kSize, STRUCTD_KIND_##type::kAlign},
#define STRUCTD_INTERNAL_SPEC(name, type) specs.push_back(STRUCTD_KIND_##type::Spec(#name));
#define STRUCTD_INTERNAL_ACCESSOR(name, type)                              \
  STRUCTD_KIND_##type::Accessor name() const {                             \
    return STRUCTD_KIND_##type::Make(payload() + kOffsets[kField_##name], \
                                     ref(), kField_##name);                \
  }

// Defines view class `Name` registered under `Key` (a string).
#define STRUCTD_STRUCT_KEYED(Name, Key, FIELDS)                                   \
  class Name : public ::structd::client::StructView {                             \
   public:                                                                        \
    using ::structd::client::StructView::StructView;                              \
    static constexpr std::string_view kKey = Key;                                 \
    enum FieldIndex : uint32_t { FIELDS(STRUCTD_INTERNAL_ENUM) kFieldCount };      \
    static constexpr std::array<::structd::client::internal::Shape, kFieldCount> \
        kShapes = {{FIELDS(STRUCTD_INTERNAL_SHAPE)}};                             \
    static constexpr std::array<uint32_t, kFieldCount> kOffsets =                 \
        ::structd::client::internal::Place(kShapes);                              \
    static std::vector<::structd::shm::FieldSpec> FieldSpecs() {                  \
      std::vector<::structd::shm::FieldSpec> specs;                               \
      FIELDS(STRUCTD_INTERNAL_SPEC)                                               \
      return specs;                                                               \
    }                                                                             \
    FIELDS(STRUCTD_INTERNAL_ACCESSOR)                                             \
  }

// Defines view class `Name`, registered under the key "Name".
#define STRUCTD_STRUCT(Name, FIELDS) STRUCTD_STRUCT_KEYED(Name, #Name, FIELDS)

#endif  // STRUCTD_CLIENT_STRUCT_H_
