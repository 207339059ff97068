#include "structd/shm/type_token.h"

#include <charconv>

#include "absl/strings/str_format.h"

namespace structd::shm {

std::string TypeToken::ToHex() const {
  return absl::StrFormat("%016x%016x", hi, lo);
}

std::optional<TypeToken> TypeToken::FromHex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  TypeToken t;
  for (int half = 0; half < 2; ++half) {
    uint64_t v = 0;
    std::string_view part = hex.substr(half * 16, 16);
    auto [p, ec] = std::from_chars(part.data(), part.data() + 16, v, 16);
    if (ec != std::errc() || p != part.data() + 16) return std::nullopt;
    (half == 0 ? t.hi : t.lo) = v;
  }
  return t;
}

}  // namespace structd::shm
