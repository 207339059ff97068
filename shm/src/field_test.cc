#include "structd/shm/field.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <limits>

#include "structd/base/posix.h"
#include "structd/shm/allocator.h"
#include "testing/temp_dir.h"

namespace structd::shm {
namespace {

using ::testing::HasSubstr;

class FieldTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ArenaOptions o;
    o.extent_size = 256 * 1024;
    auto a = Arena::Create(dir_.Sub("arena"), o);
    ASSERT_TRUE(a.ok()) << a.status();
    arena_ = std::move(*a);
    alloc_ = std::move(*Allocator::Adopt(arena_.get()));
    std::vector<FieldSpec> specs = {
        FieldSpec::Scalar("b", FieldKind::kBool),
        FieldSpec::Scalar("i8", FieldKind::kI8),
        FieldSpec::Scalar("i16", FieldKind::kI16),
        FieldSpec::Scalar("i32", FieldKind::kI32),
        FieldSpec::Scalar("i64", FieldKind::kI64),
        FieldSpec::Scalar("u8", FieldKind::kU8),
        FieldSpec::Scalar("u16", FieldKind::kU16),
        FieldSpec::Scalar("u32", FieldKind::kU32),
        FieldSpec::Scalar("u64", FieldKind::kU64),
        FieldSpec::Scalar("f32", FieldKind::kF32),
        FieldSpec::Scalar("f64", FieldKind::kF64),
        FieldSpec::Ref("r"),
        FieldSpec::String("name", 20),
        FieldSpec::Bytes("blob", 8),
        FieldSpec::Array("xs", FieldKind::kI32, 4),
    };
    layout_ = *Layout::Compute(specs);
    auto r = alloc_->Allocate(1, layout_);
    ASSERT_TRUE(r.ok());
    inst_ = *arena_->Resolve(*r);
  }

  template <typename T>
  Scalar<T> S(const char* name) {
    auto h = FieldHandle::BindScalar<T>(layout_, name);
    EXPECT_TRUE(h.ok()) << h.status();
    return h->template scalar<T>(inst_);
  }

  structd::testing::TempDir dir_;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Allocator> alloc_;
  Layout layout_;
  InstancePtr inst_;
};

template <typename T>
void ExerciseInteger(Scalar<T> f) {
  EXPECT_EQ(f.load(), T{0});
  f.store(std::numeric_limits<T>::max());
  EXPECT_EQ(f.load(std::memory_order_seq_cst), std::numeric_limits<T>::max());
  f.store(T{5}, std::memory_order_seq_cst);
  EXPECT_EQ(f.exchange(T{7}), T{5});
  T expected = T{6};
  EXPECT_FALSE(f.compare_exchange(expected, T{9}));
  EXPECT_EQ(expected, T{7});
  EXPECT_TRUE(f.compare_exchange(expected, T{9}, std::memory_order_seq_cst));
  EXPECT_EQ(f.fetch_add(T{3}), T{9});
  EXPECT_EQ(f.fetch_sub(T{2}, std::memory_order_seq_cst), T{12});
  EXPECT_EQ(f.load(), T{10});
}

TEST_F(FieldTest, EveryIntegerKindSupportsEveryOperation) {
  ExerciseInteger(S<int8_t>("i8"));
  ExerciseInteger(S<int16_t>("i16"));
  ExerciseInteger(S<int32_t>("i32"));
  ExerciseInteger(S<int64_t>("i64"));
  ExerciseInteger(S<uint8_t>("u8"));
  ExerciseInteger(S<uint16_t>("u16"));
  ExerciseInteger(S<uint32_t>("u32"));
  ExerciseInteger(S<uint64_t>("u64"));
}

TEST_F(FieldTest, SignedIntegersWrapLikeAtomics) {
  Scalar<int8_t> f = S<int8_t>("i8");
  f.store(127);
  f.fetch_add(1);
  EXPECT_EQ(f.load(), -128);
}

TEST_F(FieldTest, BoolAndFloats) {
  Scalar<bool> b = S<bool>("b");
  EXPECT_FALSE(b.load());
  b.store(true);
  EXPECT_TRUE(b.exchange(false));
  bool e = false;
  EXPECT_TRUE(b.compare_exchange(e, true));
  EXPECT_TRUE(b.load());
  Scalar<double> d = S<double>("f64");
  d.store(3.25);
  EXPECT_EQ(d.load(), 3.25);
  EXPECT_EQ(d.exchange(-1.5), 3.25);
  Scalar<float> f = S<float>("f32");
  f.store(std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isinf(f.load()));
  float fe = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(f.compare_exchange(fe, 2.0f));
  EXPECT_EQ(f.load(), 2.0f);
}

TEST_F(FieldTest, WritesLandAtTheLayoutOffsets) {
  S<uint32_t>("u32").store(0xA1B2C3D4u);
  const Field& f = layout_.fields()[*layout_.FindField("u32")];
  uint32_t raw;
  std::memcpy(&raw, inst_.payload() + f.offset, 4);
  EXPECT_EQ(raw, 0xA1B2C3D4u);
}

TEST_F(FieldTest, RefFieldsStoreRefs) {
  FieldHandle h = *FieldHandle::Bind(layout_, "r", FieldKind::kRef);
  RefField r = h.ref(inst_);
  EXPECT_TRUE(r.load().is_null());
  r.store(inst_.ref());
  EXPECT_EQ(r.load(), inst_.ref());
  EXPECT_EQ(r.exchange(Ref()), inst_.ref());
  Ref expected;
  EXPECT_TRUE(r.compare_exchange(expected, Ref::Make(1, 32, 1)));
  EXPECT_EQ(r.load(std::memory_order_relaxed), Ref::Make(1, 32, 1));
}

TEST_F(FieldTest, StringsRoundTripAndRespectCapacity) {
  FieldHandle h = *FieldHandle::Bind(layout_, "name", FieldKind::kString);
  BytesField s = h.bytes(inst_);
  EXPECT_EQ(s.capacity(), 20u);
  EXPECT_EQ(*s.Read(), "");
  ASSERT_TRUE(s.Write("hello").ok());
  EXPECT_EQ(*s.Read(), "hello");
  ASSERT_TRUE(s.Write("exactly twenty bytes").ok());
  EXPECT_EQ(*s.Read(), "exactly twenty bytes");
  absl::Status st = s.Write("twenty-one bytes long");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("capacity of 20"));
  EXPECT_EQ(*s.Read(), "exactly twenty bytes");  // unchanged
  ASSERT_TRUE(s.Write("").ok());
  EXPECT_EQ(*s.Read(), "");
}

TEST_F(FieldTest, BytesHoldArbitraryBinary) {
  FieldHandle h = *FieldHandle::Bind(layout_, "blob", FieldKind::kBytes);
  BytesField b = h.bytes(inst_);
  std::string bin("\0\xff\x01\x80z\0\0q", 8);
  ASSERT_TRUE(b.Write(bin).ok());
  EXPECT_EQ(*b.Read(), bin);
}

TEST_F(FieldTest, DamagedLengthIsDataLossNotAnOverread) {
  FieldHandle h = *FieldHandle::Bind(layout_, "blob", FieldKind::kBytes);
  ASSERT_TRUE(h.bytes(inst_).Write("abc").ok());
  // The active slot is 1 after one write; scribble its length word.
  auto* slot1_len = reinterpret_cast<uint64_t*>(
      static_cast<uint8_t*>(h.address(inst_)) + 8 + (8 + 8));
  *slot1_len = 1u << 30;
  auto r = h.bytes(inst_).Read();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(FieldTest, ArrayElementsAreBoundsChecked) {
  FieldHandle h =
      *FieldHandle::Bind(layout_, "xs", FieldKind::kArray, FieldKind::kI32);
  Array<int32_t> xs = h.array<int32_t>(inst_);
  EXPECT_EQ(xs.size(), 4u);
  for (uint32_t i = 0; i < 4; ++i) {
    auto e = xs.at(i);
    ASSERT_TRUE(e.ok());
    e->store(static_cast<int32_t>(i * 10));
  }
  EXPECT_EQ(xs.at(3)->fetch_add(1), 30);
  EXPECT_EQ(xs.at(3)->load(), 31);
  auto bad = xs.at(4);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("index 4 out of range [0, 4)"));
}

TEST_F(FieldTest, HandlesCheckNamesAndKinds) {
  EXPECT_EQ(FieldHandle::Bind(layout_, "nope", FieldKind::kU8).status().code(),
            absl::StatusCode::kNotFound);
  auto wrong = FieldHandle::BindScalar<uint64_t>(layout_, "u32");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("is u32, not u64"));
  EXPECT_EQ(FieldHandle::Bind(layout_, "xs", FieldKind::kArray, FieldKind::kU8)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Writers are recorded by pid (a bytes field's writer lock, a mutex's
// owner); the pid is cached, and a forked child must not record its
// parent's.
TEST(CachedPidTest, IsThisProcessAlsoAfterFork) {
  ASSERT_EQ(base::CachedPid(), getpid());
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(base::CachedPid() == getpid() ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child saw its parent's pid";
  EXPECT_EQ(base::CachedPid(), getpid());
}

}  // namespace
}  // namespace structd::shm
