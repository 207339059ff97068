#ifndef STRUCTD_SHM_FORMAT_VALUE_H_
#define STRUCTD_SHM_FORMAT_VALUE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "structd/shm/arena.h"
#include "structd/shm/layout.h"

namespace structd::shm {

// The value of field `f` of `instance` as text, read with the field's own
// torn-free access: numbers in decimal, bool as true/false, refs as
// r:E:O:G (or null), strings quoted with C escapes, bytes as hex, arrays
// as [a, b, ...], mutex as "unlocked" / "locked by pid N", condition as
// "seq N, waiters M". REQUIRES: instance.Fits(layout size).
std::string FormatFieldValue(const Field& f, const InstancePtr& instance);

// The inverse for one scalar (bool, integer, float): `text` parsed as a
// value of `kind`, as the bit pattern a store of that kind writes (in the
// low ScalarSize(kind) bytes). Integers in decimal or 0x hex, with '-'
// for signed kinds; floats in decimal, "inf", "-inf" or "nan"; bool as
// true/false/1/0. InvalidArgument for malformed text, OutOfRange for a
// number the kind cannot hold (the message gives the range).
absl::StatusOr<uint64_t> ParseScalarText(FieldKind kind, std::string_view text);
// Stores ParseScalarText's bits into the scalar at `p` with one atomic
// store (seq_cst). REQUIRES: `p` aligned for `kind`.
void StoreScalarBits(FieldKind kind, uint64_t bits, void* p);

}  // namespace structd::shm

#endif  // STRUCTD_SHM_FORMAT_VALUE_H_
