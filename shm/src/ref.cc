#include "structd/shm/ref.h"

#include <charconv>

#include "absl/strings/str_format.h"
#include <vector>
#include "structd/shm/format.h"

namespace structd::shm {
namespace {

std::optional<uint64_t> ParseHex(std::string_view s) {
  if (s.starts_with("0x") || s.starts_with("0X")) s.remove_prefix(2);
  if (s.empty() || s.size() > 16) return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::string Ref::ToString() const {
  if (is_null()) return "r:null";
  return absl::StrFormat("r:%x:%x:%x", extent_id(), offset(),
                         generation_tag());
}

std::optional<Ref> Ref::Parse(std::string_view text) {
  if (text == "r:null") return Ref();
  if (text.starts_with("r:")) {
    std::string_view rest = text.substr(2);
    std::vector<std::string_view> parts;
    for (size_t pos; (pos = rest.find(':')) != std::string_view::npos;) {
      parts.push_back(rest.substr(0, pos));
      rest.remove_prefix(pos + 1);
    }
    parts.push_back(rest);
    if (parts.size() != 3) return std::nullopt;
    auto e = ParseHex(parts[0]);
    auto o = ParseHex(parts[1]);
    auto g = ParseHex(parts[2]);
    if (!e || !o || !g || *e >= kMaxExtents || *o % 16 != 0 ||
        *o >= kMaxExtentSize || *g > kGenerationMask) {
      return std::nullopt;
    }
    return Ref::Make(static_cast<uint32_t>(*e), static_cast<uint32_t>(*o),
                     static_cast<uint32_t>(*g));
  }
  auto bits = ParseHex(text);
  if (!bits) return std::nullopt;
  return Ref::FromBits(*bits);
}

}  // namespace structd::shm
