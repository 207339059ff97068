#include "structd/shm/layout.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace structd::shm {
namespace {

using ::testing::HasSubstr;

Layout MustCompute(std::vector<FieldSpec> fields) {
  absl::StatusOr<Layout> l = Layout::Compute(std::move(fields));
  EXPECT_TRUE(l.ok()) << l.status();
  return *l;
}

TEST(LayoutTest, PlacesScalarsAtNaturalAlignmentWithPadding) {
  Layout l = MustCompute({FieldSpec::Scalar("a", FieldKind::kU8),
                          FieldSpec::Scalar("b", FieldKind::kU32),
                          FieldSpec::Scalar("c", FieldKind::kU16),
                          FieldSpec::Scalar("d", FieldKind::kF64),
                          FieldSpec::Scalar("e", FieldKind::kBool)});
  ASSERT_EQ(l.fields().size(), 5u);
  EXPECT_EQ(l.fields()[0].offset, 0u);
  EXPECT_EQ(l.fields()[1].offset, 4u);
  EXPECT_EQ(l.fields()[2].offset, 8u);
  EXPECT_EQ(l.fields()[3].offset, 16u);
  EXPECT_EQ(l.fields()[4].offset, 24u);
  EXPECT_EQ(l.align(), 8u);
  EXPECT_EQ(l.size(), 32u);  // 25 rounded up to 8
}

TEST(LayoutTest, EveryScalarKindHasItsNaturalSize) {
  struct Case {
    FieldKind kind;
    uint32_t size;
  } cases[] = {{FieldKind::kBool, 1}, {FieldKind::kI8, 1},  {FieldKind::kI16, 2},
               {FieldKind::kI32, 4},  {FieldKind::kI64, 8}, {FieldKind::kU8, 1},
               {FieldKind::kU16, 2},  {FieldKind::kU32, 4}, {FieldKind::kU64, 8},
               {FieldKind::kF32, 4},  {FieldKind::kF64, 8}, {FieldKind::kRef, 8}};
  for (const Case& c : cases) {
    Layout l = MustCompute({FieldSpec::Scalar("pad", FieldKind::kU8),
                            FieldSpec::Scalar("x", c.kind)});
    EXPECT_EQ(l.fields()[1].size, c.size) << FieldKindName(c.kind);
    EXPECT_EQ(l.fields()[1].offset, c.size) << FieldKindName(c.kind);
    EXPECT_EQ(l.size(), 2 * c.size) << FieldKindName(c.kind);
  }
}

TEST(LayoutTest, CompositeKindsHaveDocumentedSizes) {
  Layout l = MustCompute({FieldSpec::Scalar("flag", FieldKind::kBool),
                          FieldSpec::String("name", 13),
                          FieldSpec::Array("xs", FieldKind::kU16, 5),
                          FieldSpec::Mutex("mu"),
                          FieldSpec::Condition("cv"),
                          FieldSpec::Bytes("blob", 16)});
  const auto& f = l.fields();
  EXPECT_EQ(f[1].offset, 8u);
  EXPECT_EQ(f[1].size, 8u + 2 * (8 + 16));  // 13 rounds up to 16
  EXPECT_EQ(f[2].offset, 8u + 56);
  EXPECT_EQ(f[2].size, 10u);
  EXPECT_EQ(f[3].offset, 80u);  // 74 rounded up to 8
  EXPECT_EQ(f[3].size, kMutexFieldSize);
  EXPECT_EQ(f[4].offset, 144u);
  EXPECT_EQ(f[4].size, kConditionFieldSize);
  EXPECT_EQ(f[5].offset, 152u);
  EXPECT_EQ(f[5].size, 8u + 2 * (8 + 16));
  EXPECT_EQ(l.size(), 152u + 56);
  EXPECT_EQ(l.mutex_offsets(), std::vector<uint32_t>{80});
}

TEST(LayoutTest, RefOffsetsListEveryRefField) {
  Layout l = MustCompute({FieldSpec::Ref("next"),
                          FieldSpec::Scalar("v", FieldKind::kI32),
                          FieldSpec::Ref("prev")});
  EXPECT_EQ(l.ref_offsets(), (std::vector<uint32_t>{0, 16}));
}

TEST(LayoutTest, FingerprintIsStableAcrossRunsAndBuilds) {
  // These values are part of the format: a change breaks every stored
  // fingerprint and every client's bind check.
  Layout l = MustCompute({FieldSpec::Scalar("x", FieldKind::kF64),
                          FieldSpec::Scalar("y", FieldKind::kF64)});
  EXPECT_EQ(l.canonical(),
            "structd.layout.v1{x:f64@0+8;y:f64@8+8;}size=16,align=8");
  EXPECT_EQ(l.fingerprint(), Fnv1a64(l.canonical()));
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
}

TEST(LayoutTest, FingerprintDiffersForDifferentShapes) {
  Layout a = MustCompute({FieldSpec::Scalar("x", FieldKind::kF64)});
  Layout b = MustCompute({FieldSpec::Scalar("x", FieldKind::kF32)});
  Layout c = MustCompute({FieldSpec::Scalar("y", FieldKind::kF64)});
  Layout d = MustCompute({FieldSpec::String("s", 8)});
  Layout e = MustCompute({FieldSpec::String("s", 9)});
  Layout f = MustCompute({FieldSpec::Bytes("s", 8)});
  std::vector<uint64_t> fps = {a.fingerprint(), b.fingerprint(),
                               c.fingerprint(), d.fingerprint(),
                               e.fingerprint(), f.fingerprint()};
  std::sort(fps.begin(), fps.end());
  EXPECT_EQ(std::unique(fps.begin(), fps.end()), fps.end());
  EXPECT_TRUE(a == MustCompute({FieldSpec::Scalar("x", FieldKind::kF64)}));
  EXPECT_FALSE(a == b);
}

TEST(LayoutTest, RefTargetIsPartOfTheShape) {
  TypeToken t{0x1234, 0x5678};
  Layout a = MustCompute({FieldSpec::Ref("r")});
  Layout b = MustCompute({FieldSpec::Ref("r", t)});
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  EXPECT_NE(b.canonical().find(t.ToHex()), std::string::npos);
}

void ExpectInvalid(std::vector<FieldSpec> fields, const std::string& needle,
                   const LayoutLimits& limits = {}) {
  absl::StatusOr<Layout> l = Layout::Compute(std::move(fields), limits);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(l.status().message()), HasSubstr(needle));
}

TEST(LayoutTest, RejectsEmptyLayout) { ExpectInvalid({}, "no fields"); }

TEST(LayoutTest, RejectsEmptyName) {
  ExpectInvalid({FieldSpec::Scalar("", FieldKind::kU8)}, "empty name");
}

TEST(LayoutTest, RejectsDuplicateName) {
  ExpectInvalid({FieldSpec::Scalar("a", FieldKind::kU8),
                 FieldSpec::Scalar("a", FieldKind::kU16)},
                "duplicate field name");
}

TEST(LayoutTest, RejectsOverlongName) {
  ExpectInvalid({FieldSpec::Scalar(std::string(65, 'a'), FieldKind::kU8)},
                "more than the limit of 64");
}

TEST(LayoutTest, RejectsNamesThatAreNotIdentifiers) {
  ExpectInvalid({FieldSpec::Scalar("1abc", FieldKind::kU8)}, "identifier");
  ExpectInvalid({FieldSpec::Scalar("a-b", FieldKind::kU8)}, "identifier");
}

TEST(LayoutTest, RejectsZeroCount) {
  ExpectInvalid({FieldSpec::String("s", 0)}, "needs N between 1");
  ExpectInvalid({FieldSpec::Bytes("b", 0)}, "needs N between 1");
  ExpectInvalid({FieldSpec::Array("a", FieldKind::kU8, 0)},
                "needs N between 1");
}

TEST(LayoutTest, RejectsCountAboveLimit) {
  LayoutLimits limits;
  limits.max_count = 100;
  ExpectInvalid({FieldSpec::String("s", 101)}, "needs N between 1 and 100",
                limits);
}

TEST(LayoutTest, RejectsNonScalarArrayElements) {
  ExpectInvalid({FieldSpec::Array("a", FieldKind::kMutex, 2)},
                "array element kind 'mutex'");
  ExpectInvalid({FieldSpec::Array("a", FieldKind::kString, 2)},
                "array element kind 'string'");
}

TEST(LayoutTest, RejectsTooManyFields) {
  std::vector<FieldSpec> fields;
  for (int i = 0; i < 257; ++i) {
    fields.push_back(FieldSpec::Scalar("f" + std::to_string(i), FieldKind::kU8));
  }
  ExpectInvalid(fields, "257 fields, more than the limit of 256");
}

TEST(LayoutTest, RejectsTotalSizeOverTheConfiguredMaximum) {
  LayoutLimits limits;
  limits.max_payload_size = 64;
  ExpectInvalid({FieldSpec::Array("a", FieldKind::kU64, 8),
                 FieldSpec::Scalar("b", FieldKind::kU8)},
                "more than the limit of 64", limits);
}

TEST(LayoutTest, RejectsUnknownKind) {
  FieldSpec f = FieldSpec::Scalar("x", FieldKind::kU8);
  f.kind = static_cast<FieldKind>(200);
  ExpectInvalid({f}, "unknown field kind");
}

TEST(LayoutTest, FieldTypeNamesRoundTrip) {
  for (const char* text :
       {"bool", "i8", "u64", "f32", "ref", "string[16]", "bytes[3]",
        "array<f64,4>", "array<bool,9>", "mutex", "condition",
        "ref<0000000000001234000000000000abcd>"}) {
    FieldSpec spec;
    ASSERT_TRUE(ParseFieldType(text, spec).ok()) << text;
    EXPECT_EQ(FieldTypeName(spec), text);
  }
}

TEST(LayoutTest, ParseFieldTypeRejectsGarbageWithHelp) {
  for (const char* text : {"", "int", "string", "string[x]", "array<u8>",
                           "array<mutex,2>", "ref<12>", "bytes[-1]"}) {
    FieldSpec spec;
    absl::Status s = ParseFieldType(text, spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(s.message()), HasSubstr("use bool")) << text;
  }
}

TEST(LayoutTest, FindFieldByName) {
  Layout l = MustCompute({FieldSpec::Scalar("a", FieldKind::kU8),
                          FieldSpec::Scalar("b", FieldKind::kU8)});
  EXPECT_EQ(l.FindField("b"), 1u);
  EXPECT_EQ(l.FindField("zz"), std::nullopt);
}

TEST(TypeTokenTest, HexRoundTrip) {
  TypeToken t{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(t.ToHex(), "0123456789abcdeffedcba9876543210");
  EXPECT_EQ(TypeToken::FromHex(t.ToHex()), t);
  EXPECT_EQ(TypeToken::FromHex("0123456789ABCDEFFEDCBA9876543210"), t);
  EXPECT_EQ(TypeToken::FromHex("xyz"), std::nullopt);
  EXPECT_EQ(TypeToken::FromHex(std::string(32, 'g')), std::nullopt);
  EXPECT_EQ(t.ShortHex(), "01234567");
}

}  // namespace
}  // namespace structd::shm
