#include "structd/shm/layout.h"

#include <algorithm>
#include <charconv>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace structd::shm {
namespace {

struct KindInfo {
  FieldKind kind;
  std::string_view name;
};

constexpr KindInfo kKinds[] = {
    {FieldKind::kBool, "bool"},     {FieldKind::kI8, "i8"},
    {FieldKind::kI16, "i16"},       {FieldKind::kI32, "i32"},
    {FieldKind::kI64, "i64"},       {FieldKind::kU8, "u8"},
    {FieldKind::kU16, "u16"},       {FieldKind::kU32, "u32"},
    {FieldKind::kU64, "u64"},       {FieldKind::kF32, "f32"},
    {FieldKind::kF64, "f64"},       {FieldKind::kRef, "ref"},
    {FieldKind::kBytes, "bytes"},   {FieldKind::kString, "string"},
    {FieldKind::kArray, "array"},   {FieldKind::kMutex, "mutex"},
    {FieldKind::kCondition, "condition"},
};

std::optional<FieldKind> KindFromName(std::string_view name) {
  for (const auto& k : kKinds) {
    if (k.name == name) return k.kind;
  }
  return std::nullopt;
}

bool IsValidName(std::string_view name) {
  if (name.empty()) return false;
  auto alpha = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  };
  if (!alpha(name[0])) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) {
    return alpha(c) || (c >= '0' && c <= '9');
  });
}

// absl in Debian 12 has its own string_view; bridge std::string_view into
// StrCat/StrFormat.
absl::string_view AV(std::string_view s) { return {s.data(), s.size()}; }

uint32_t RoundUp(uint32_t v, uint32_t a) { return (v + a - 1) / a * a; }

std::optional<uint32_t> ParseU32(std::string_view s) {
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
    return std::nullopt;
  }
  return v;
}

}  // namespace

std::string_view FieldKindName(FieldKind kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "invalid";
}

bool IsScalarKind(FieldKind kind) {
  return kind >= FieldKind::kBool && kind <= FieldKind::kF64;
}

bool IsIntegerKind(FieldKind kind) {
  return kind >= FieldKind::kI8 && kind <= FieldKind::kU64;
}

size_t ScalarSize(FieldKind kind) {
  switch (kind) {
    case FieldKind::kBool:
    case FieldKind::kI8:
    case FieldKind::kU8:
      return 1;
    case FieldKind::kI16:
    case FieldKind::kU16:
      return 2;
    case FieldKind::kI32:
    case FieldKind::kU32:
    case FieldKind::kF32:
      return 4;
    case FieldKind::kI64:
    case FieldKind::kU64:
    case FieldKind::kF64:
    case FieldKind::kRef:
      return 8;
    default:
      return 0;
  }
}


namespace {

// Every factory: a name and a kind, the rest defaulted.
FieldSpec Named(std::string name, FieldKind kind) {
  FieldSpec s;
  s.name = std::move(name);
  s.kind = kind;
  return s;
}

}  // namespace

FieldSpec FieldSpec::Scalar(std::string name, FieldKind kind) { return Named(std::move(name), kind); }
FieldSpec FieldSpec::Ref(std::string name, TypeToken target) {
  FieldSpec s = Named(std::move(name), FieldKind::kRef);
  s.ref_target = target;
  return s;
}
FieldSpec FieldSpec::Bytes(std::string name, uint32_t capacity) {
  FieldSpec s = Named(std::move(name), FieldKind::kBytes);
  s.count = capacity;
  return s;
}
FieldSpec FieldSpec::String(std::string name, uint32_t capacity) {
  FieldSpec s = Named(std::move(name), FieldKind::kString);
  s.count = capacity;
  return s;
}
FieldSpec FieldSpec::Array(std::string name, FieldKind element, uint32_t count) {
  FieldSpec s = Named(std::move(name), FieldKind::kArray);
  s.element = element;
  s.count = count;
  return s;
}
FieldSpec FieldSpec::Mutex(std::string name) {
  return Scalar(std::move(name), FieldKind::kMutex);
}
FieldSpec FieldSpec::Condition(std::string name) {
  return Scalar(std::move(name), FieldKind::kCondition);
}

std::string FieldTypeName(const FieldSpec& spec) {
  switch (spec.kind) {
    case FieldKind::kBytes:
    case FieldKind::kString:
      return absl::StrCat(AV(FieldKindName(spec.kind)), "[", spec.count, "]");
    case FieldKind::kArray:
      return absl::StrCat("array<", AV(FieldKindName(spec.element)), ",",
                          spec.count, ">");
    case FieldKind::kRef:
      if (spec.ref_target.is_zero()) return "ref";
      return absl::StrCat("ref<", spec.ref_target.ToHex(), ">");
    default:
      return std::string(AV(FieldKindName(spec.kind)));
  }
}

absl::Status ParseFieldType(std::string_view text, FieldSpec& spec) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field type '", AV(text), "': ", AV(why),
        " (use bool, i8..i64, u8..u64, f32, f64, ref, ref<TOKEN>, bytes[N], "
        "string[N], array<SCALAR,N>, mutex or condition)"));
  };
  spec.count = 0;
  spec.ref_target = {};
  if (auto k = KindFromName(text)) {
    if (*k == FieldKind::kBytes || *k == FieldKind::kString ||
        *k == FieldKind::kArray) {
      return bad("needs a size");
    }
    spec.kind = *k;
    return absl::OkStatus();
  }
  if (text.starts_with("ref<") && text.ends_with(">")) {
    auto token = TypeToken::FromHex(text.substr(4, text.size() - 5));
    if (!token) return bad("the ref target must be a 32-digit hex token");
    spec.kind = FieldKind::kRef;
    spec.ref_target = *token;
    return absl::OkStatus();
  }
  for (FieldKind k : {FieldKind::kBytes, FieldKind::kString}) {
    std::string prefix = absl::StrCat(AV(FieldKindName(k)), "[");
    if (text.starts_with(prefix) && text.ends_with("]")) {
      auto n = ParseU32(
          text.substr(prefix.size(), text.size() - prefix.size() - 1));
      if (!n) return bad("the capacity must be a decimal number");
      spec.kind = k;
      spec.count = *n;
      return absl::OkStatus();
    }
  }
  if (text.starts_with("array<") && text.ends_with(">")) {
    std::string_view inner = text.substr(6, text.size() - 7);
    size_t comma = inner.find(',');
    if (comma == std::string_view::npos) return bad("missing ',N'");
    auto elem = KindFromName(inner.substr(0, comma));
    if (!elem || (!IsScalarKind(*elem) && *elem != FieldKind::kRef)) {
      return bad("the element must be bool, an integer or a float");
    }
    auto n = ParseU32(inner.substr(comma + 1));
    if (!n) return bad("the length must be a decimal number");
    spec.kind = FieldKind::kArray;
    spec.element = *elem;
    spec.count = *n;
    return absl::OkStatus();
  }
  return bad("unknown type");
}

absl::StatusOr<Layout> Layout::Compute(std::vector<FieldSpec> specs,
                                       const LayoutLimits& limits) {
  if (specs.empty()) {
    return absl::InvalidArgumentError(
        "layout: no fields (declare at least one field)");
  }
  if (specs.size() > limits.max_fields) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layout: %d fields, more than the limit of %d (split the struct "
        "and link the parts with ref fields)",
        specs.size(), limits.max_fields));
  }
  Layout layout;
  std::unordered_set<std::string> names;  // copies: specs are moved below
  uint64_t offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    FieldSpec& spec = specs[i];
    std::string where = absl::StrCat("field #", i, " '", spec.name, "'");
    if (spec.name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "field #", i, ": empty name (give every field a name)"));
    }
    if (spec.name.size() > limits.max_name_length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: name is %d characters, more than the limit of %d (shorten "
          "it)",
          where, spec.name.size(), limits.max_name_length));
    }
    if (!IsValidName(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where,
          ": not an identifier (use letters, digits and '_', not starting "
          "with a digit)"));
    }
    if (!names.insert(spec.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": duplicate field name (each field needs its own name)"));
    }
    uint64_t size = 0;  // 64-bit: N times an element must not wrap
    uint32_t align = 0;
    switch (spec.kind) {
      case FieldKind::kBool:
      case FieldKind::kI8:
      case FieldKind::kI16:
      case FieldKind::kI32:
      case FieldKind::kI64:
      case FieldKind::kU8:
      case FieldKind::kU16:
      case FieldKind::kU32:
      case FieldKind::kU64:
      case FieldKind::kF32:
      case FieldKind::kF64:
      case FieldKind::kRef:
        size = align = static_cast<uint32_t>(ScalarSize(spec.kind));
        spec.count = 0;
        if (spec.kind != FieldKind::kRef) spec.ref_target = {};
        break;
      case FieldKind::kBytes:
      case FieldKind::kString:
      case FieldKind::kArray:
        if (spec.count == 0 || spec.count > limits.max_count) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: %s needs N between 1 and %d, got %d", where,
              AV(FieldKindName(spec.kind)), limits.max_count, spec.count));
        }
        if (spec.kind == FieldKind::kArray) {
          if (spec.element == FieldKind::kRef && !limits.ref_arrays) {
            return absl::InvalidArgumentError(absl::StrCat(
                where, ": array<ref,N> is kept for the daemon's built-in types (ports); "
                "declare the references as ref fields"));
          }
          if (!IsScalarKind(spec.element) && spec.element != FieldKind::kRef) {
            return absl::InvalidArgumentError(absl::StrCat(
                where, ": array element kind '", AV(FieldKindName(spec.element)),
                "' is not allowed (use bool, an integer or a float)"));
          }
          align = static_cast<uint32_t>(ScalarSize(spec.element));
          size = uint64_t{align} * spec.count;
        } else {
          align = 8;
          size = BytesFieldSize(spec.count);
        }
        break;
      case FieldKind::kMutex:
        size = kMutexFieldSize;
        align = 8;
        spec.count = 0;
        break;
      case FieldKind::kCondition:
        size = kConditionFieldSize;
        align = 4;
        spec.count = 0;
        break;
      default:
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: unknown field kind %d (use one of the kinds in "
            "doc/arena-format.md)",
            where, static_cast<int>(spec.kind)));
    }
    if (spec.kind != FieldKind::kArray) spec.element = FieldKind::kU64;
    if (spec.kind != FieldKind::kRef) spec.ref_target = {};
    offset = (offset + align - 1) / align * align + size;
    if (offset > limits.max_payload_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the struct grows to at least %d bytes, more than the limit of "
          "%d (use smaller fields, or split the struct and link the parts "
          "with ref fields)",
          where, offset, limits.max_payload_size));
    }
    Field f;
    f.offset = static_cast<uint32_t>(offset - size);
    f.size = static_cast<uint32_t>(size);
    f.align = align;
    f.spec = std::move(spec);
    layout.align_ = std::max(layout.align_, align);
    if (f.kind() == FieldKind::kRef) layout.ref_offsets_.push_back(f.offset);
    if (f.kind() == FieldKind::kArray && f.spec.element == FieldKind::kRef) {
      for (uint32_t i = 0; i < f.spec.count; ++i) layout.ref_offsets_.push_back(f.offset + 8 * i);
    }
    if (f.kind() == FieldKind::kMutex) {
      layout.mutex_offsets_.push_back(f.offset);
    }
    layout.fields_.push_back(std::move(f));
  }
  layout.size_ = RoundUp(static_cast<uint32_t>(offset), layout.align_);
  if (layout.size_ > limits.max_payload_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layout: %d bytes after padding, more than the limit of %d (use "
        "smaller fields)",
        layout.size_, limits.max_payload_size));
  }
  std::string& c = layout.canonical_;
  c = "structd.layout.v1{";
  for (const Field& f : layout.fields_) {
    absl::StrAppend(&c, f.name(), ":", FieldTypeName(f.spec), "@", f.offset,
                    "+", f.size, ";");
  }
  absl::StrAppend(&c, "}size=", layout.size_, ",align=", layout.align_);
  layout.fingerprint_ = Fnv1a64(c);
  return layout;
}

std::optional<size_t> Layout::FindField(std::string_view name) const {
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (fields_[i].name() == name) return i;
  }
  return std::nullopt;
}

std::string Layout::ToString() const {
  std::string out = absl::StrFormat("  size %d, align %d, fingerprint %s\n",
                                    size_, align_, FingerprintHex(fingerprint_));
  for (const Field& f : fields_) {
    absl::StrAppendFormat(&out, "  %-24s %-20s offset %6d size %6d\n", f.name(),
                          FieldTypeName(f.spec), f.offset, f.size);
  }
  return out;
}

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string FingerprintHex(uint64_t fingerprint) {
  return absl::StrFormat("%016x", fingerprint);
}


}  // namespace structd::shm
