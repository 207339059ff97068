#ifndef STRUCTD_CLIENT_DYNAMIC_H_
#define STRUCTD_CLIENT_DYNAMIC_H_

// Struct types described at run time: a key and a field list known only
// when the program runs (a binding to another language, a tool that learns
// layouts from the channel). They meet STRUCTD_STRUCT types exactly: the
// same key and fields give the same layout, fingerprint and token, and
// they share the fast paths (stocks for Allocate, the View cache) because
// each DynamicStruct takes one per-program type slot, as each C++ struct
// type does.
//
//   const DynamicStruct* order = *DynamicStruct::Make("Order",
//       {FieldSpec::Scalar("price", FieldKind::kF64), ...});
//   auto made = channel->AllocateBatch(*order, 1);     // Owned<DynamicView>
//   DynamicView v = *(*made)[0];
//   v.scalar<double>(0).store(3.5);
//
// A DynamicStruct is interned: Make with the same key and fields returns the
// same object, which lives until the program exits (so views may point at
// it, and the type slots, 64 per program, are not used up by repetition).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/client/struct.h"
#include "structd/shm/field.h"
#include "structd/shm/layout.h"
#include "structd/shm/sync.h"

namespace structd::client {

class DynamicStruct {
 public:
  // The interned type for `key` with `fields` (declaration order, natural
  // alignment: the rule of STRUCTD_STRUCT). INVALID_ARGUMENT naming the
  // field and the fix for a bad list (shm::Layout::Compute's checks).
  static absl::StatusOr<const DynamicStruct*> Make(std::string key,
                                                   std::vector<shm::FieldSpec> fields);

  const std::string& key() const { return key_; }
  const shm::Layout& layout() const { return layout_; }
  // Index into layout().fields(), or nullopt.
  std::optional<size_t> FindField(std::string_view name) const {
    return layout_.FindField(name);
  }
  // The per-program type slot (internal::FastTypeSlot's numbering), or a
  // number >= internal::kFastTypeSlots when the program has used them all
  // (the type then works without the fast paths).
  uint32_t slot() const { return slot_; }

 private:
  DynamicStruct(std::string key, shm::Layout layout, uint32_t slot)
      : key_(std::move(key)), layout_(std::move(layout)), slot_(slot) {}
  std::string key_;
  shm::Layout layout_;
  uint32_t slot_;
};

// A view of an instance of a DynamicStruct: the instance's address, its ref
// and its type. Trivially copyable, owns nothing (as every view). Field
// accessors take the field's index in type().layout().fields(); the caller
// picks the accessor that matches the field's kind (REQUIRES, checked by
// assert only: a binding checks kinds once, when it resolves a name).
class DynamicView : public StructView {
 public:
  DynamicView() = default;
  DynamicView(const shm::InstancePtr& p, const DynamicStruct* type)
      : StructView(p), type_(type) {}

  const DynamicStruct& type() const { return *type_; }
  // The field's first byte.
  uint8_t* field_address(size_t index) const {
    return payload() + type_->layout().fields()[index].offset;
  }
  const shm::Field& field(size_t index) const { return type_->layout().fields()[index]; }

  template <shm::ScalarType T>
  shm::Scalar<T> scalar(size_t index) const {
    return shm::Scalar<T>(field_address(index));
  }
  template <shm::ScalarType T>
  shm::Array<T> array(size_t index) const {
    return shm::Array<T>(field_address(index), field(index).spec.count);
  }
  shm::BytesField bytes(size_t index) const {
    return shm::BytesField(field_address(index), field(index).spec.count);
  }
  RefTo<StructView> ref_field(size_t index) const {
    return RefTo<StructView>(field_address(index), StructView::ref(),
                             static_cast<uint32_t>(index));
  }
  shm::MutexField mutex(size_t index) const { return shm::MutexField(field_address(index)); }
  shm::ConditionField condition(size_t index) const {
    return shm::ConditionField(field_address(index));
  }

  // The type slot Owned<DynamicView> recycles through (see Owned::Reset).
  uint32_t fast_slot() const { return type_ ? type_->slot() : UINT32_MAX; }

 private:
  const DynamicStruct* type_ = nullptr;
};

}  // namespace structd::client

#endif  // STRUCTD_CLIENT_DYNAMIC_H_
