#include "structd/shm/ref.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_format.h"

#include "structd/shm/allocator.h"
#include "structd/shm/arena.h"
#include "testing/temp_dir.h"

namespace structd::shm {
namespace {

using ::testing::HasSubstr;

TEST(RefTest, PacksExtentOffsetAndGeneration) {
  Ref r = Ref::Make(5, 0x12340, 77);
  EXPECT_EQ(r.extent_id(), 5u);
  EXPECT_EQ(r.offset(), 0x12340u);
  EXPECT_EQ(r.generation_tag(), 77u);
  EXPECT_FALSE(r.is_null());
  EXPECT_TRUE(Ref().is_null());
  // Extremes of every part.
  Ref m = Ref::Make(kMaxExtents - 1, kMaxExtentSize - 16, kGenerationMask);
  EXPECT_EQ(m.extent_id(), kMaxExtents - 1);
  EXPECT_EQ(m.offset(), kMaxExtentSize - 16);
  EXPECT_EQ(m.generation_tag(), kGenerationMask);
  // The generation keeps only its low bits.
  EXPECT_EQ(Ref::Make(0, 16, kGenerationMask + 2).generation_tag(), 1u);
}

TEST(RefTest, TextFormRoundTrips) {
  Ref r = Ref::Make(3, 0x1040, 9);
  EXPECT_EQ(r.ToString(), "r:3:1040:9");
  EXPECT_EQ(Ref::Parse("r:3:1040:9"), r);
  EXPECT_EQ(Ref::Parse(absl::StrFormat("0x%016x", r.bits())), r);
  EXPECT_EQ(Ref::Parse("r:null"), Ref());
  EXPECT_EQ(Ref::Parse("r:3:1041:9"), std::nullopt);  // misaligned
  EXPECT_EQ(Ref::Parse("r:3:1040"), std::nullopt);
  EXPECT_EQ(Ref::Parse("banana"), std::nullopt);
  EXPECT_EQ(Ref::Parse("r:4000:0:0"), std::nullopt);  // extent too large
}

class RefResolveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ArenaOptions o;
    o.extent_size = 256 * 1024;
    o.max_extents = 4;
    auto a = Arena::Create(dir_.Sub("arena"), o);
    ASSERT_TRUE(a.ok()) << a.status();
    arena_ = std::move(*a);
    auto alloc = Allocator::Adopt(arena_.get());
    ASSERT_TRUE(alloc.ok()) << alloc.status();
    alloc_ = std::move(*alloc);
    auto l = Layout::Compute({FieldSpec::Scalar("v", FieldKind::kU64),
                              FieldSpec::Ref("next")});
    ASSERT_TRUE(l.ok());
    layout_ = *l;
  }
  Allocator::TypeLookup Types() {
    return [this](uint32_t i) { return i == 1 ? &layout_ : nullptr; };
  }

  structd::testing::TempDir dir_;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Allocator> alloc_;
  Layout layout_;
};

TEST_F(RefResolveTest, ResolvesALiveInstance) {
  auto r = alloc_->Allocate(1, layout_);
  ASSERT_TRUE(r.ok());
  auto inst = arena_->Resolve(*r);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(inst->type_index(), 1u);
  EXPECT_EQ(inst->ref(), *r);
}

TEST_F(RefResolveTest, StaleRefIsNotFound) {
  auto r = alloc_->Allocate(1, layout_);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(alloc_->Release(*r, Types()).ok());
  auto inst = arena_->Resolve(*r);
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(inst.status().message()), HasSubstr("stale"));
  // The slot is reused with a new generation: the old ref stays stale.
  auto r2 = alloc_->Allocate(1, layout_);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->offset(), r->offset());
  EXPECT_NE(r2->generation_tag(), r->generation_tag());
  EXPECT_EQ(arena_->Resolve(*r).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(arena_->Resolve(*r2).ok());
}

TEST_F(RefResolveTest, ForgedGenerationIsNotFound) {
  auto r = alloc_->Allocate(1, layout_);
  ASSERT_TRUE(r.ok());
  Ref forged = Ref::Make(r->extent_id(), r->offset(), r->generation_tag() + 5);
  EXPECT_EQ(arena_->Resolve(forged).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RefResolveTest, NullRefIsInvalid) {
  auto s = arena_->Resolve(Ref()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("null"));
}

TEST_F(RefResolveTest, UnknownExtentIsInvalid) {
  auto r = alloc_->Allocate(1, layout_);
  ASSERT_TRUE(r.ok());
  Ref forged = Ref::Make(3, r->offset(), r->generation_tag());
  auto s = arena_->Resolve(forged).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("extent 3 does not exist"));
  Ref far = Ref::Make(kMaxExtents - 1, r->offset(), 0);
  EXPECT_EQ(arena_->Resolve(far).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RefResolveTest, OutOfBoundsOffsetIsInvalid) {
  for (uint32_t off : {0u, 16u, 256u * 1024u, 16u * 1024u * 1024u}) {
    auto s = arena_->Resolve(Ref::Make(0, off, 1)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << off;
    EXPECT_THAT(std::string(s.message()), HasSubstr("outside")) << off;
  }
}

TEST_F(RefResolveTest, MisalignedOrMidBlockOffsetIsInvalid) {
  auto r = alloc_->Allocate(1, layout_);
  ASSERT_TRUE(r.ok());
  // 16-aligned but inside the 32-byte block: not the start of an instance.
  auto s = arena_->Resolve(Ref::Make(0, r->offset() + 16, 1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not at the start"));
}

TEST_F(RefResolveTest, OffsetInAnUnusedSlabIsInvalid) {
  auto r = alloc_->Allocate(1, layout_);
  ASSERT_TRUE(r.ok());
  uint32_t last_slab = ComputeExtentGeometry(256 * 1024).data_offset +
                       2 * kSlabSize;
  auto s = arena_->Resolve(Ref::Make(0, last_slab, 1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no instance"));
}

}  // namespace
}  // namespace structd::shm
