#include "structd/shm/format_value.h"

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/numeric/int128.h"

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

template <typename T>
absl::StatusOr<uint64_t> ParseInteger(const std::string& text, const std::string& kind_name) {
  const std::string& t = text;
  bool negative = !t.empty() && t[0] == '-';
  std::string digits = negative ? t.substr(1) : t;
  bool hex = digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X');
  if (hex) digits = digits.substr(2);
  auto malformed = [&]() -> absl::Status {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text, "' is not a ", kind_name, " (give a decimal or 0x-hex integer)"));
  };
  if (digits.empty() || digits.find_first_not_of(hex ? "0123456789abcdefABCDEF" : "0123456789") !=
                            std::string::npos) {
    return malformed();
  }
  absl::uint128 magnitude = 0;
  for (char c : digits) {
    int d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
    magnitude = magnitude * (hex ? 16 : 10) + static_cast<unsigned>(d);
    if (magnitude > absl::uint128(UINT64_MAX) + 1) break;  // out of every range
  }
  const absl::int128 lo = std::numeric_limits<T>::min();
  const absl::int128 hi = std::numeric_limits<T>::max();
  const bool fits = magnitude <= absl::uint128(UINT64_MAX) + 1 &&
                    (negative ? -absl::int128(magnitude) >= lo : absl::int128(magnitude) <= hi);
  if (!fits || (negative && !std::is_signed_v<T> && magnitude != 0)) {
    return absl::OutOfRangeError(absl::StrCat("'", text, "' does not fit a ", kind_name, " (",
                                              int64_t{std::numeric_limits<T>::min()}, " to ",
                                              uint64_t{std::numeric_limits<T>::max()}, ")"));
  }
  T v = negative ? static_cast<T>(-absl::int128(magnitude)) : static_cast<T>(magnitude);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <typename T>
absl::StatusOr<uint64_t> ParseFloat(const std::string& text, const std::string& kind_name) {
  const std::string& t = text;
  char* end = nullptr;
  errno = 0;
  double d = t.empty() || std::isspace(static_cast<unsigned char>(t[0]))
                 ? 0
                 : std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a ", kind_name, " (give a decimal number, inf or nan)"));
  }
  // strtod overflows to inf with ERANGE ("1e309"); underflow (ERANGE near
  // zero) keeps the nearest value.
  const bool overflow = (errno == ERANGE && std::abs(d) >= 1) ||
                        (std::isfinite(d) && std::abs(d) > std::numeric_limits<T>::max());
  if (overflow) {
    return absl::OutOfRangeError(absl::StrCat("'", text, "' does not fit a ", kind_name, " (up to ",
                                              std::numeric_limits<T>::max(), " in magnitude)"));
  }
  T v = static_cast<T>(d);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <typename T>
void StoreAs(uint64_t bits, void* p) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  shm::Scalar<T>(p).store(v);
}

}  // namespace

absl::StatusOr<uint64_t> ParseScalarText(FieldKind kind, std::string_view text_view) {
  const std::string text(text_view);
  const std::string name(FieldKindName(kind));
  switch (kind) {
    case FieldKind::kBool:
      if (text == "true" || text == "1") return 1;
      if (text == "false" || text == "0") return 0;
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "' is not a bool (give true, false, 1 or 0)"));
    case FieldKind::kI8: return ParseInteger<int8_t>(text, name);
    case FieldKind::kI16: return ParseInteger<int16_t>(text, name);
    case FieldKind::kI32: return ParseInteger<int32_t>(text, name);
    case FieldKind::kI64: return ParseInteger<int64_t>(text, name);
    case FieldKind::kU8: return ParseInteger<uint8_t>(text, name);
    case FieldKind::kU16: return ParseInteger<uint16_t>(text, name);
    case FieldKind::kU32: return ParseInteger<uint32_t>(text, name);
    case FieldKind::kU64: return ParseInteger<uint64_t>(text, name);
    case FieldKind::kF32: return ParseFloat<float>(text, name);
    case FieldKind::kF64: return ParseFloat<double>(text, name);
    default:
      return absl::InvalidArgumentError(absl::StrCat(name, " is not a scalar kind"));
  }
}

void StoreScalarBits(FieldKind kind, uint64_t bits, void* p) {
  switch (kind) {
    case FieldKind::kBool: StoreAs<bool>(bits, p); break;
    case FieldKind::kI8: StoreAs<int8_t>(bits, p); break;
    case FieldKind::kI16: StoreAs<int16_t>(bits, p); break;
    case FieldKind::kI32: StoreAs<int32_t>(bits, p); break;
    case FieldKind::kI64: StoreAs<int64_t>(bits, p); break;
    case FieldKind::kU8: StoreAs<uint8_t>(bits, p); break;
    case FieldKind::kU16: StoreAs<uint16_t>(bits, p); break;
    case FieldKind::kU32: StoreAs<uint32_t>(bits, p); break;
    case FieldKind::kU64: StoreAs<uint64_t>(bits, p); break;
    case FieldKind::kF32: StoreAs<float>(bits, p); break;
    case FieldKind::kF64: StoreAs<double>(bits, p); break;
    default: break;
  }
}

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
        absl::StrAppend(&out, f.spec.element == FieldKind::kRef
                                  ? RefField(p + i * elem).load().ToString()
                                  : ScalarText(f.spec.element, p + i * elem));
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
