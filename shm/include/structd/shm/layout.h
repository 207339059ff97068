#ifndef STRUCTD_SHM_LAYOUT_H_
#define STRUCTD_SHM_LAYOUT_H_

// Layouts: the immutable, daemon-computed shape of a struct type.
//
// A layout places fields in declaration order, each at its natural
// alignment (like a C struct, without reordering), and rounds the total
// size up to the struct's alignment. Offsets are relative to the start of
// the instance *payload*, which follows the 16-byte instance header.
//
// The canonical form is a text rendering of every placed field; the
// fingerprint is FNV-1a 64 over it. Both are pure functions of the field
// list, so they are identical in every process and across restarts.
// See doc/arena-format.md.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/shm/type_token.h"

namespace structd::shm {

enum class FieldKind : uint8_t {
  kBool = 1,
  kI8,
  kI16,
  kI32,
  kI64,
  kU8,
  kU16,
  kU32,
  kU64,
  kF32,
  kF64,
  kRef,        // 64-bit reference; optionally restricted to one type token
  kBytes,      // bytes[N]: inline, capacity N, torn-free reads
  kString,     // string[N]: like bytes[N], shown as text
  kArray,      // array<scalar, N>: N elements of a numeric or bool kind
  kMutex,      // process-shared robust mutex
  kCondition,  // futex-based condition variable
};

// "bool", "i32", "string", ...: the spelling used in canonical forms.
std::string_view FieldKindName(FieldKind kind);
// True for bool, integers and floats: the kinds an array may hold and the
// kinds with atomic load/store.
bool IsScalarKind(FieldKind kind);
bool IsIntegerKind(FieldKind kind);
// Size in bytes of one scalar (bool: 1). REQUIRES: IsScalarKind(kind) or kRef.
size_t ScalarSize(FieldKind kind);

// A field as the user declares it.
struct FieldSpec {
  std::string name;
  FieldKind kind = FieldKind::kU64;
  // kBytes/kString: capacity N in bytes. kArray: element count N. Else 0.
  uint32_t count = 0;
  // kArray: the element kind (a scalar kind). Else ignored.
  FieldKind element = FieldKind::kU64;
  // kRef: if non-zero, the ref may only name instances of this type.
  TypeToken ref_target;

  // Convenience constructors for tests and examples.
  static FieldSpec Scalar(std::string name, FieldKind kind);
  static FieldSpec Ref(std::string name, TypeToken target = {});
  static FieldSpec Bytes(std::string name, uint32_t capacity);
  static FieldSpec String(std::string name, uint32_t capacity);
  static FieldSpec Array(std::string name, FieldKind element, uint32_t count);
  static FieldSpec Mutex(std::string name);
  static FieldSpec Condition(std::string name);
};

// The type of a field as text, e.g. "u32", "string[16]", "array<f64,4>",
// "ref", "ref<3f2a...>" (full 32-digit token), "array<ref,N>" (built-in
// types only).
std::string FieldTypeName(const FieldSpec& spec);
// Parses FieldTypeName's output back into `spec` (name untouched).
// Returns InvalidArgument naming the text on failure.
absl::Status ParseFieldType(std::string_view text, FieldSpec& spec);

// A placed field.
struct Field {
  FieldSpec spec;
  uint32_t offset = 0;  // from the start of the payload
  uint32_t size = 0;    // bytes
  uint32_t align = 0;   // bytes

  const std::string& name() const { return spec.name; }
  FieldKind kind() const { return spec.kind; }
};

// Bounds that RegisterType enforces. The daemon sets them from its config.
struct LayoutLimits {
  uint32_t max_fields = 256;
  uint32_t max_name_length = 64;
  uint32_t max_count = 1u << 20;        // N in bytes[N], string[N], array<T,N>
  uint32_t max_payload_size = 1u << 20;  // total payload bytes
  // array<ref,N>: only in the daemon's built-in types (a port's messages),
  // whose references are moved by the daemon's and the client library's
  // own protocols; users' types hold references in ref fields, which
  // StoreRefs addresses one by one.
  bool ref_arrays = false;

  // No bounds, ref arrays allowed: for layouts a registry has already
  // accepted (read back by a restarted daemon, or from the daemon by a
  // client) and for the daemon's built-in types. The limits above are
  // for what clients register.
  static LayoutLimits None() {
    LayoutLimits none;
    none.max_fields = UINT32_MAX;
    none.max_name_length = UINT32_MAX;
    none.max_count = UINT32_MAX;
    none.max_payload_size = UINT32_MAX;
    none.ref_arrays = true;
    return none;
  }
};

// On-shm byte sizes of the composite kinds (see field.h and sync.h for the
// structures). Exposed so tools can show them.
inline constexpr uint32_t kMutexFieldSize = 64;
inline constexpr uint32_t kConditionFieldSize = 8;
// bytes[N]/string[N]: an 8-byte state word, then two slots, each an 8-byte
// length word and N bytes rounded up to 8.
constexpr uint64_t BytesFieldSize(uint64_t capacity) {
  return 8 + 2 * (8 + (capacity + 7) / 8 * 8);
}

class Layout {
 public:
  // Validates `fields` against `limits` and places them. Errors are
  // InvalidArgument with a message naming the field and the fix.
  static absl::StatusOr<Layout> Compute(std::vector<FieldSpec> fields,
                                        const LayoutLimits& limits = {});

  const std::vector<Field>& fields() const { return fields_; }
  // Payload size (without the instance header), a multiple of align().
  uint32_t size() const { return size_; }
  uint32_t align() const { return align_; }
  uint64_t fingerprint() const { return fingerprint_; }
  const std::string& canonical() const { return canonical_; }

  // Index into fields(), or nullopt.
  std::optional<size_t> FindField(std::string_view name) const;
  // Offsets of the ref fields, ascending: the references an instance owns.
  const std::vector<uint32_t>& ref_offsets() const { return ref_offsets_; }
  // Offsets of the mutex fields, which need initializing on allocation.
  const std::vector<uint32_t>& mutex_offsets() const { return mutex_offsets_; }

  // Human-readable multi-line description (one field per line); used in
  // error messages that must show two layouts side by side.
  std::string ToString() const;

  friend bool operator==(const Layout& a, const Layout& b) {
    return a.canonical_ == b.canonical_;
  }

 private:
  std::vector<Field> fields_;
  std::vector<uint32_t> ref_offsets_;
  std::vector<uint32_t> mutex_offsets_;
  uint32_t size_ = 0;
  uint32_t align_ = 1;
  uint64_t fingerprint_ = 0;
  std::string canonical_;
};

// FNV-1a 64 of `bytes`: the fingerprint function. Stable by definition.
uint64_t Fnv1a64(std::string_view bytes);
// 16 lowercase hex digits.
std::string FingerprintHex(uint64_t fingerprint);

}  // namespace structd::shm

#endif  // STRUCTD_SHM_LAYOUT_H_
