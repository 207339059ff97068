#ifndef STRUCTD_SHM_TYPE_TOKEN_H_
#define STRUCTD_SHM_TYPE_TOKEN_H_

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace structd::shm {

// A 128-bit type token. The daemon draws it from a CSPRNG when a type is
// registered in a channel; it is unforgeable in practice and never derived
// from the type's key. The all-zero token is "no token".
struct TypeToken {
  uint64_t hi = 0;
  uint64_t lo = 0;

  bool is_zero() const { return hi == 0 && lo == 0; }
  friend auto operator<=>(const TypeToken&, const TypeToken&) = default;

  // 32 lowercase hex digits, hi first.
  std::string ToHex() const;
  // The first 8 hex digits, for tables and log lines.
  std::string ShortHex() const { return ToHex().substr(0, 8); }
  // Parses exactly 32 hex digits (either case); nullopt otherwise.
  static std::optional<TypeToken> FromHex(std::string_view hex);
};

struct TypeTokenHash {
  size_t operator()(const TypeToken& t) const {
    return static_cast<size_t>(t.hi ^ (t.lo * 0x9E3779B97F4A7C15ull));
  }
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_TYPE_TOKEN_H_
