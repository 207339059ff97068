// Channel: an operator's write of one field (structctl set).

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/channel.h"
#include "structd/shm/field.h"
#include "structd/shm/format_value.h"

namespace structd::server {
namespace {

// "name" or "name[i]".
struct FieldPath {
  std::string name;
  bool indexed = false;
  uint32_t index = 0;
};

absl::StatusOr<FieldPath> ParseFieldPath(const std::string& text) {
  FieldPath p;
  size_t open = text.find('[');
  if (open == std::string::npos) {
    p.name = text;
    return p;
  }
  p.name = text.substr(0, open);
  p.indexed = true;
  if (text.back() != ']' ||
      !absl::SimpleAtoi(text.substr(open + 1, text.size() - open - 2), &p.index)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field '", text, "': give a field name, or NAME[INDEX] for an array element"));
  }
  return p;
}

}  // namespace

absl::StatusOr<Channel::FieldWrite> Channel::SetFieldAsAdmin(shm::Ref ref,
                                                             const std::string& field,
                                                             const std::string& value) {
  absl::StatusOr<FieldPath> path = ParseFieldPath(field);
  if (!path.ok()) return path.status();
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  absl::StatusOr<shm::InstancePtr> inst = arena_->Resolve(ref);
  if (!inst.ok()) return inst.status();
  const RegisteredType* type = registry_.FindByIndex(inst->type_index());
  if (type == nullptr || !inst->Fits(type->layout.size())) {
    return absl::DataLossError(absl::StrCat(ref.ToString(), " has a damaged header (type index ",
                                            inst->type_index(),
                                            "); run structctl check on the channel"));
  }
  if (IsBuiltinTypeKey(type->key)) {
    return absl::FailedPreconditionError(absl::StrCat(
        ref.ToString(), " is a '", type->key,
        "', a built-in type whose fields change only by its own protocol (a port's by sends "
        "and receives); it cannot be set by hand"));
  }
  std::optional<size_t> index = type->layout.FindField(path->name);
  if (!index) {
    std::string names;
    for (const shm::Field& f : type->layout.fields()) {
      absl::StrAppend(&names, names.empty() ? "" : ", ", f.name());
    }
    return absl::InvalidArgumentError(absl::StrCat("'", type->key, "' has no field '",
                                                   path->name, "' (its fields: ", names, ")"));
  }
  const shm::Field& f = type->layout.fields()[*index];
  FieldWrite out;
  out.key = type->key;
  out.field = field;
  out.type = shm::FieldTypeName(f.spec);
  const std::string where = absl::StrCat("'", type->key, ".", f.name(), "' (", out.type, ")");
  if (path->indexed != (f.kind() == shm::FieldKind::kArray)) {
    return absl::InvalidArgumentError(
        path->indexed ? absl::StrCat(where, " is not an array; give its name without [INDEX]")
                      : absl::StrCat(where, " is an array; set one element: ", f.name(),
                                     "[INDEX]"));
  }
  out.previous = shm::FormatFieldValue(f, *inst);
  uint8_t* p = inst->payload() + f.offset;
  switch (f.kind()) {
    case shm::FieldKind::kMutex:
    case shm::FieldKind::kCondition:
      return absl::FailedPreconditionError(absl::StrCat(
          where, " cannot be set by hand: lock, wait and notify it from a client"));
    case shm::FieldKind::kArray: {
      if (path->index >= f.spec.count) {
        return absl::OutOfRangeError(absl::StrCat(where, ": index ", path->index,
                                                  " is past its ", f.spec.count, " elements"));
      }
      absl::StatusOr<uint64_t> bits = shm::ParseScalarText(f.spec.element, value);
      if (!bits.ok())
        return absl::Status(bits.status().code(),
                            absl::StrCat(where, ": ", bits.status().message()));
      shm::StoreScalarBits(f.spec.element, *bits,
                           p + path->index * shm::ScalarSize(f.spec.element));
      out.type = std::string(shm::FieldKindName(f.spec.element));
      break;
    }
    case shm::FieldKind::kBytes:
    case shm::FieldKind::kString: {
      std::string bytes = value;
      if (f.kind() == shm::FieldKind::kBytes) {
        std::string hex = value.starts_with("0x") ? value.substr(2) : value;
        if (hex.size() % 2 != 0 ||
            hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": '", value, "' is not hex digits (two per byte)"));
        }
        bytes = absl::HexStringToBytes(hex);
      }
      if (absl::Status s = shm::BytesField(p, f.spec.count).Write(bytes); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
      }
      break;
    }
    case shm::FieldKind::kRef: {
      std::optional<shm::Ref> target =
          value == "null" ? std::optional<shm::Ref>(shm::Ref()) : shm::Ref::Parse(value);
      if (!target) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": '", value, "' is not a ref (give r:EXTENT:OFFSET:GEN, its 16 hex digits, "
            "or null)"));
      }
      absl::StatusOr<uint64_t> stored =
          StoreRefsLocked("", {RefStore{ref, static_cast<uint32_t>(*index), *target, false}});
      if (!stored.ok()) {
        return absl::Status(stored.status().code(),
                            absl::StrCat(where, ": ", stored.status().message()));
      }
      break;
    }
    default: {
      absl::StatusOr<uint64_t> bits = shm::ParseScalarText(f.kind(), value);
      if (!bits.ok())
        return absl::Status(bits.status().code(),
                            absl::StrCat(where, ": ", bits.status().message()));
      shm::StoreScalarBits(f.kind(), *bits, p);
      break;
    }
  }
  out.value = shm::FormatFieldValue(f, *inst);
  return out;
}

}  // namespace structd::server
