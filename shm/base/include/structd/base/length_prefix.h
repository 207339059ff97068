#ifndef STRUCTD_BASE_LENGTH_PREFIX_H_
#define STRUCTD_BASE_LENGTH_PREFIX_H_

// The memory socket's framing (doc/memory-socket.md), written once for the
// daemon, the client library and the tests: a 4-byte little-endian length
// N, 1 to kMaxFrameBody, then N bytes.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace structd::base {

inline constexpr size_t kMaxFrameBody = 4096;
inline constexpr size_t kFramePrefix = 4;

// `body` with its length prefix.
inline std::string Frame(std::string_view body) {
  std::string frame(kFramePrefix, '\0');
  for (size_t i = 0; i < kFramePrefix; ++i) {
    frame[i] = static_cast<char>((body.size() >> (8 * i)) & 0xff);
  }
  frame.append(body);
  return frame;
}

// The body length announced by the first kFramePrefix bytes of `bytes`;
// nullopt if fewer arrived; 0 for a length outside 1..kMaxFrameBody (a
// malformed frame: close the connection).
inline std::optional<size_t> FrameBodyLength(std::string_view bytes) {
  if (bytes.size() < kFramePrefix) return std::nullopt;
  uint32_t len = 0;
  for (size_t i = 0; i < kFramePrefix; ++i) {
    len |= uint32_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  }
  return len >= 1 && len <= kMaxFrameBody ? len : 0;
}

}  // namespace structd::base

#endif  // STRUCTD_BASE_LENGTH_PREFIX_H_
