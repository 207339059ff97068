// The C++ struct description (struct.h): field specs, compile-time
// offsets (must equal shm::Layout::Compute's) and typed accessors, on a
// plain buffer standing in for an instance.

#include "structd/client/struct.h"

#include <cstring>

#include <gtest/gtest.h>

namespace structd::client {
namespace {

#define EVERY_KIND_FIELDS(F)                                                      \
  F(flag, bool) F(small, i8) F(mid, i16) F(i, i32) F(big, i64) F(b, u8) F(w, u16) \
  F(d, u32) F(q, u64) F(f, f32) F(x, f64) F(name, string(13)) F(blob, bytes(3))   \
  F(prices, array(f64, 4)) F(next, ref(Node)) F(any, anyref) F(lock, mutex)     \
  F(ready, condition) F(tail, u8)
class Node;
STRUCTD_STRUCT(EveryKind, EVERY_KIND_FIELDS);

#define NODE_FIELDS(F) F(value, u64) F(next, ref(Node))
STRUCTD_STRUCT(Node, NODE_FIELDS);

#define KEYED_FIELDS(F) F(v, f32)
STRUCTD_STRUCT_KEYED(Keyed, "app.v2.Keyed", KEYED_FIELDS);

TEST(StructTest, CompileTimeOffsetsEqualTheLayoutRule) {
  absl::StatusOr<shm::Layout> layout = shm::Layout::Compute(EveryKind::FieldSpecs());
  ASSERT_TRUE(layout.ok()) << layout.status();
  ASSERT_EQ(layout->fields().size(), static_cast<size_t>(EveryKind::kFieldCount));
  for (size_t i = 0; i < layout->fields().size(); ++i) {
    EXPECT_EQ(EveryKind::kOffsets[i], layout->fields()[i].offset)
        << layout->fields()[i].name();
    EXPECT_EQ(EveryKind::kShapes[i].size, layout->fields()[i].size)
        << layout->fields()[i].name();
  }
  EXPECT_EQ(layout->fields()[EveryKind::kField_name].spec.kind, shm::FieldKind::kString);
  EXPECT_EQ(layout->fields()[EveryKind::kField_blob].spec.kind, shm::FieldKind::kBytes);
  EXPECT_EQ(shm::FieldTypeName(layout->fields()[EveryKind::kField_prices].spec),
            "array<f64,4>");
  EXPECT_EQ(layout->fields()[EveryKind::kField_tail].name(), "tail");
}

TEST(StructTest, KeysDefaultToTheStructName) {
  EXPECT_EQ(Node::kKey, "Node");
  EXPECT_EQ(Keyed::kKey, "app.v2.Keyed");
}

// A zeroed, 64-aligned block: a header and a payload.
struct alignas(64) FakeBlock {
  uint8_t bytes[1024] = {};
};

TEST(StructTest, AccessorsReadAndWriteTheirOwnBytes) {
  FakeBlock block;
  shm::InstancePtr p(block.bytes, Ref::FromBits(0x42), sizeof block.bytes);
  EveryKind v(p);
  v.x().store(2.5);
  v.q().fetch_add(7);
  v.tail().store(9);
  ASSERT_TRUE(v.name().Write("hello").ok());
  auto element = v.prices().at(3);
  ASSERT_TRUE(element.ok());
  element->store(1.25);
  EXPECT_EQ(v.x().load(), 2.5);
  EXPECT_EQ(v.q().load(), 7u);
  EXPECT_EQ(v.tail().load(), 9u);
  EXPECT_EQ(*v.name().Read(), "hello");
  EXPECT_EQ(v.prices().at(3)->load(), 1.25);
  EXPECT_EQ(v.prices().at(4).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(v.name().Write("fourteen chars").ok());
  // Writes landed at the compile-time offsets, past the header.
  const uint8_t* payload = block.bytes + shm::kInstanceHeaderSize;
  double x;
  std::memcpy(&x, payload + EveryKind::kOffsets[EveryKind::kField_x], sizeof x);
  EXPECT_EQ(x, 2.5);
  EXPECT_EQ(payload[EveryKind::kOffsets[EveryKind::kField_tail]], 9);
  // A ref field knows its owner and index (what Channel::Store sends).
  EXPECT_EQ(v.next().owner().bits(), 0x42u);
  EXPECT_EQ(v.next().field_index(), static_cast<uint32_t>(EveryKind::kField_next));
  EXPECT_TRUE(v.next().load().is_null());
}

}  // namespace
}  // namespace structd::client
