// Pins every offset and encoding doc/arena-format.md states, so the page a
// client in another language is written from cannot drift from the code.

#include "structd/shm/format.h"

#include <cstddef>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "structd/shm/field.h"
#include "structd/shm/layout.h"
#include "structd/shm/ref.h"
#include "structd/shm/sync.h"

namespace structd::shm {
namespace {

TEST(FormatTest, StructureOffsetsAreTheDocumented) {
  EXPECT_EQ(offsetof(ArenaHeader, magic), 0u);
  EXPECT_EQ(offsetof(ArenaHeader, format_version), 8u);
  EXPECT_EQ(offsetof(ArenaHeader, header_size), 12u);
  EXPECT_EQ(offsetof(ArenaHeader, epoch), 16u);
  EXPECT_EQ(offsetof(ArenaHeader, extent_size), 24u);
  EXPECT_EQ(offsetof(ArenaHeader, max_extents), 32u);
  EXPECT_EQ(offsetof(ArenaHeader, extent_count), 36u);
  EXPECT_EQ(offsetof(ArenaHeader, created_unix_ms), 40u);
  EXPECT_EQ(offsetof(ArenaHeader, owner_generation), 48u);
  EXPECT_EQ(offsetof(ArenaHeader, reserved), 56u);
  EXPECT_EQ(sizeof(ArenaHeader), 4096u);
  EXPECT_EQ(offsetof(ExtentHeader, epoch), 8u);
  EXPECT_EQ(offsetof(ExtentHeader, extent_size), 16u);
  EXPECT_EQ(offsetof(ExtentHeader, extent_id), 24u);
  EXPECT_EQ(offsetof(ExtentHeader, slab_count), 28u);
  EXPECT_EQ(offsetof(ExtentHeader, data_offset), 32u);
  EXPECT_EQ(sizeof(ExtentHeader), 64u);
  EXPECT_EQ(offsetof(SlabDescriptor, block_size), 0u);
  EXPECT_EQ(offsetof(SlabDescriptor, span_slabs), 4u);
  EXPECT_EQ(offsetof(SlabDescriptor, next_unused), 8u);
  EXPECT_EQ(offsetof(SlabDescriptor, live), 12u);
  EXPECT_EQ(offsetof(SlabDescriptor, generation_watermark), 16u);
  EXPECT_EQ(sizeof(SlabDescriptor), 32u);
  EXPECT_EQ(offsetof(InstanceHeader, type_index), 0u);
  EXPECT_EQ(offsetof(InstanceHeader, generation), 4u);
  EXPECT_EQ(offsetof(InstanceHeader, refcount), 8u);
  EXPECT_EQ(offsetof(InstanceHeader, flags), 12u);
  const char magic[] = "SDARENA1";
  EXPECT_EQ(std::memcmp(&kArenaMagic, magic, 8), 0);
  const char emagic[] = "SEXTENT1";
  EXPECT_EQ(std::memcmp(&kExtentMagic, emagic, 8), 0);
}

TEST(FormatTest, GeometryExamplesAreTheDocumented) {
  EXPECT_EQ(ComputeExtentGeometry(128 * 1024).slab_count, 1u);
  EXPECT_EQ(ComputeExtentGeometry(128 * 1024).data_offset, 4096u);
  EXPECT_EQ(ComputeExtentGeometry(1 << 20).slab_count, 15u);
  EXPECT_EQ(ComputeExtentGeometry(1 << 20).data_offset, 4096u);
  EXPECT_EQ(ComputeExtentGeometry(64 << 20).slab_count, 1023u);
  EXPECT_EQ(ComputeExtentGeometry(64 << 20).data_offset, 36864u);
}

TEST(FormatTest, TheWorkedRefExampleDecodes) {
  Ref r = Ref::FromBits(0x0004002400000001ull);
  EXPECT_EQ(r.extent_id(), 0u);
  EXPECT_EQ(r.offset(), 0x9000u);
  EXPECT_EQ(r.generation_tag(), 1u);
  EXPECT_EQ(r.ToString(), "r:0:9000:1");
  EXPECT_EQ(Ref::Make(0, 0x9000, 1), r);
}

TEST(FormatTest, TheWorkedStringExampleIsTheEncoding) {
  auto layout = Layout::Compute({FieldSpec::Scalar("id", FieldKind::kU64),
                                 FieldSpec::String("name", 12)});
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->fields()[1].offset, 8u);
  EXPECT_EQ(layout->fields()[1].size, 56u);
  EXPECT_EQ(layout->size(), 64u);
  alignas(8) uint8_t payload[64] = {};
  BytesField name(payload + 8, 12);
  // Five publishes: version 5, active slot 1 (0, 1, 0, 1, 0, 1).
  for (const char* v : {"a", "bb", "ccc", "dddd", "hello"}) ASSERT_TRUE(name.Write(v).ok());
  uint64_t state;
  std::memcpy(&state, payload + 8, 8);
  EXPECT_EQ(state, 0xbu);
  uint64_t length;
  std::memcpy(&length, payload + 40, 8);
  EXPECT_EQ(length, 5u);
  EXPECT_EQ(std::memcmp(payload + 48, "hello", 5), 0);
  EXPECT_EQ(BytesFieldSize(12), 56u);
}

TEST(FormatTest, MutexAndConditionFieldsAreTheDocumentedSizes) {
  EXPECT_EQ(kMutexFieldSize, 64u);
  EXPECT_EQ(kConditionFieldSize, 8u);
  EXPECT_EQ(sizeof(pthread_mutex_t), 40u);  // the holder pid follows at 40
  alignas(8) uint8_t field[64] = {};
  MutexField::Initialize(field);
  int kind;
  std::memcpy(&kind, field + 16, 4);
  EXPECT_NE(kind & 16, 0);
  EXPECT_NE(kind & 128, 0);
  MutexField m(field);
  auto guard = m.Lock();
  ASSERT_TRUE(guard.ok());
  uint32_t pid;
  std::memcpy(&pid, field + 40, 4);
  EXPECT_EQ(pid, static_cast<uint32_t>(getpid()));
}

}  // namespace
}  // namespace structd::shm
