#ifndef STRUCTD_TESTS_TESTING_CLIENT_TYPES_H_
#define STRUCTD_TESTS_TESTING_CLIENT_TYPES_H_

// Shared struct definitions of the client tests and their worker program.

#include <functional>
#include <string>

#include "structd/client/struct.h"

namespace structd::testing {

#define STRUCTD_TEST_COUNTER_FIELDS(F) F(hits, u64) F(label, string(24))
STRUCTD_STRUCT(Counter, STRUCTD_TEST_COUNTER_FIELDS);

#define STRUCTD_TEST_VECTOR_FIELDS(F) F(x, f64) F(y, f64)
STRUCTD_STRUCT(Vector, STRUCTD_TEST_VECTOR_FIELDS);

// The same key with another layout: must not bind.
#define STRUCTD_TEST_VECTOR3_FIELDS(F) F(x, f64) F(y, f64) F(z, f64)
STRUCTD_STRUCT_KEYED(Vector3, "Vector", STRUCTD_TEST_VECTOR3_FIELDS);

class Node;
#define STRUCTD_TEST_NODE_FIELDS(F) F(value, u64) F(next, ref(Node))
STRUCTD_STRUCT(Node, STRUCTD_TEST_NODE_FIELDS);

#define STRUCTD_TEST_GUARDED_FIELDS(F) F(lock, mutex) F(value, u64)
STRUCTD_STRUCT(Guarded, STRUCTD_TEST_GUARDED_FIELDS);

// Shared by the fault tests' chaos workers: locked, written, linked.
#define STRUCTD_TEST_ANCHOR_FIELDS(F) \
  F(lock, mutex) F(text, string(32)) F(hits, u64) F(next, ref(Node))
STRUCTD_STRUCT(Anchor, STRUCTD_TEST_ANCHOR_FIELDS);

// A field of every kind: what snapshots, restore and structctl set must
// carry exactly.
#define STRUCTD_TEST_EVERYTHING_FIELDS(F)                                                   \
  F(flag, bool) F(tiny, i8) F(small, i16) F(medium, i32) F(big, i64) F(octet, u8)          \
  F(port, u16) F(count, u32) F(total, u64) F(ratio, f32) F(price, f64) F(name, string(16)) \
  F(blob, bytes(8)) F(samples, array(i32, 4)) F(next, ref(Node)) F(any, anyref)           \
  F(lock, mutex) F(ready, condition)
STRUCTD_STRUCT(Everything, STRUCTD_TEST_EVERYTHING_FIELDS);

// A behavior table for Vector.
struct VectorMethods {
  std::function<std::string(const Vector&)> describe;
};

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_CLIENT_TYPES_H_
