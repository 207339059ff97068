#include "structd/shm/format_value.h"

#include <cinttypes>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/shm/field.h"
#include "structd/shm/sync.h"

namespace structd::shm {
namespace {

std::string ScalarText(FieldKind kind, void* p) {
  switch (kind) {
    case FieldKind::kBool:
      return shm::Scalar<bool>(p).load() ? "true" : "false";
    case FieldKind::kI8:
      return absl::StrCat(shm::Scalar<int8_t>(p).load());
    case FieldKind::kI16:
      return absl::StrCat(shm::Scalar<int16_t>(p).load());
    case FieldKind::kI32:
      return absl::StrCat(shm::Scalar<int32_t>(p).load());
    case FieldKind::kI64:
      return absl::StrCat(shm::Scalar<int64_t>(p).load());
    case FieldKind::kU8:
      return absl::StrCat(shm::Scalar<uint8_t>(p).load());
    case FieldKind::kU16:
      return absl::StrCat(shm::Scalar<uint16_t>(p).load());
    case FieldKind::kU32:
      return absl::StrCat(shm::Scalar<uint32_t>(p).load());
    case FieldKind::kU64:
      return absl::StrCat(shm::Scalar<uint64_t>(p).load());
    case FieldKind::kF32:
      return absl::StrFormat("%g", shm::Scalar<float>(p).load());
    case FieldKind::kF64:
      return absl::StrFormat("%g", shm::Scalar<double>(p).load());
    default:
      return "?";
  }
}

}  // namespace

std::string FormatFieldValue(const Field& f, const InstancePtr& instance) {
  uint8_t* p = instance.payload() + f.offset;
  switch (f.kind()) {
    case FieldKind::kRef:
      return RefField(p).load().ToString();
    case FieldKind::kBytes:
    case FieldKind::kString: {
      absl::StatusOr<std::string> v = BytesField(p, f.spec.count).Read();
      if (!v.ok()) return absl::StrCat("<", v.status().message(), ">");
      if (f.kind() == FieldKind::kString) {
        return absl::StrCat("\"", absl::CEscape(*v), "\"");
      }
      return absl::StrCat("0x", absl::BytesToHexString(*v));
    }
    case FieldKind::kArray: {
      std::string out = "[";
      size_t elem = ScalarSize(f.spec.element);
      for (uint32_t i = 0; i < f.spec.count; ++i) {
        if (i > 0) absl::StrAppend(&out, ", ");
        if (i == 64) {
          absl::StrAppend(&out, "... (", f.spec.count, " elements)");
          break;
        }
        absl::StrAppend(&out, ScalarText(f.spec.element, p + i * elem));
      }
      return out + "]";
    }
    case FieldKind::kMutex: {
      uint32_t pid = MutexField(p).owner_pid();
      return pid == 0 ? "unlocked" : absl::StrCat("locked by pid ", pid);
    }
    case FieldKind::kCondition: {
      uint32_t seq = shm::Scalar<uint32_t>(p).load();
      uint32_t waiters = shm::Scalar<uint32_t>(p + 4).load();
      return absl::StrCat("seq ", seq, ", waiters ", waiters);
    }
    default:
      return ScalarText(f.kind(), p);
  }
}

}  // namespace structd::shm
