#include "structd/shm/format_value.h"

#include <bit>
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

namespace structd::shm {
namespace {

template <typename T>
T Decode(FieldKind kind, const char* text) {
  absl::StatusOr<uint64_t> bits = ParseScalarText(kind, text);
  EXPECT_TRUE(bits.ok()) << text << ": " << bits.status();
  T v{};
  uint64_t b = bits.ok() ? *bits : 0;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

absl::StatusCode Code(FieldKind kind, const char* text) {
  return ParseScalarText(kind, text).status().code();
}

TEST(ParseScalarTextTest, EveryKindAtItsLimits) {
  EXPECT_EQ(Decode<bool>(FieldKind::kBool, "true"), true);
  EXPECT_EQ(Decode<bool>(FieldKind::kBool, "0"), false);
  EXPECT_EQ(Decode<int8_t>(FieldKind::kI8, "-128"), -128);
  EXPECT_EQ(Decode<int8_t>(FieldKind::kI8, "127"), 127);
  EXPECT_EQ(Decode<uint8_t>(FieldKind::kU8, "0xff"), 255);
  EXPECT_EQ(Decode<int16_t>(FieldKind::kI16, "-32768"), -32768);
  EXPECT_EQ(Decode<uint16_t>(FieldKind::kU16, "65535"), 65535);
  EXPECT_EQ(Decode<int32_t>(FieldKind::kI32, "-2147483648"), INT32_MIN);
  EXPECT_EQ(Decode<uint32_t>(FieldKind::kU32, "0xFFFFFFFF"), UINT32_MAX);
  EXPECT_EQ(Decode<int64_t>(FieldKind::kI64, "-9223372036854775808"), INT64_MIN);
  EXPECT_EQ(Decode<int64_t>(FieldKind::kI64, "9223372036854775807"), INT64_MAX);
  EXPECT_EQ(Decode<uint64_t>(FieldKind::kU64, "18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(Decode<uint64_t>(FieldKind::kU64, "-0"), 0u);
  EXPECT_EQ(Decode<float>(FieldKind::kF32, "1.5"), 1.5f);
  EXPECT_EQ(Decode<double>(FieldKind::kF64, "-2.25e10"), -2.25e10);
  EXPECT_TRUE(std::isinf(Decode<double>(FieldKind::kF64, "-inf")));
  EXPECT_TRUE(std::isnan(Decode<float>(FieldKind::kF32, "nan")));
}

TEST(ParseScalarTextTest, OnePastTheRangeIsOutOfRange) {
  EXPECT_EQ(Code(FieldKind::kI8, "128"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kI8, "-129"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kU8, "256"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kU8, "-1"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kU16, "0x10000"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kI32, "2147483648"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kI64, "9223372036854775808"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kU64, "18446744073709551616"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kU64, "99999999999999999999999999999999999999999"),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kF32, "1e39"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Code(FieldKind::kF64, "1e309"), absl::StatusCode::kOutOfRange);
  absl::Status s = ParseScalarText(FieldKind::kU8, "300").status();
  EXPECT_NE(s.message().find("0 to 255"), std::string::npos) << s;
}

TEST(ParseScalarTextTest, MalformedTextIsInvalidArgument) {
  for (const char* bad : {"", " 1", "1 ", "1.0", "0x", "x1", "--1", "+-1", "1e3", "0xg"}) {
    EXPECT_EQ(Code(FieldKind::kI32, bad), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  for (const char* bad : {"", " 1", "1.5x", "one"}) {
    EXPECT_EQ(Code(FieldKind::kF64, bad), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  for (const char* bad : {"yes", "TRUE", "2", ""}) {
    EXPECT_EQ(Code(FieldKind::kBool, bad), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  EXPECT_EQ(Code(FieldKind::kMutex, "1"), absl::StatusCode::kInvalidArgument);
}

TEST(ParseScalarTextTest, StoreScalarBitsWritesOnlyTheFieldsBytes) {
  alignas(8) uint8_t word[8];
  std::memset(word, 0xee, sizeof word);
  StoreScalarBits(FieldKind::kI16, *ParseScalarText(FieldKind::kI16, "-2"), word);
  int16_t v;
  std::memcpy(&v, word, 2);
  EXPECT_EQ(v, -2);
  for (int i = 2; i < 8; ++i) EXPECT_EQ(word[i], 0xee) << i;
}

}  // namespace
}  // namespace structd::shm
