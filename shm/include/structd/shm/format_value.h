#ifndef STRUCTD_SHM_FORMAT_VALUE_H_
#define STRUCTD_SHM_FORMAT_VALUE_H_

#include <string>

#include "structd/shm/arena.h"
#include "structd/shm/layout.h"

namespace structd::shm {

// The value of field `f` of `instance` as text, read with the field's own
// torn-free access: numbers in decimal, bool as true/false, refs as
// r:E:O:G (or null), strings quoted with C escapes, bytes as hex, arrays
// as [a, b, ...], mutex as "unlocked" / "locked by pid N", condition as
// "seq N, waiters M". REQUIRES: instance.Fits(layout size).
std::string FormatFieldValue(const Field& f, const InstancePtr& instance);

}  // namespace structd::shm

#endif  // STRUCTD_SHM_FORMAT_VALUE_H_
