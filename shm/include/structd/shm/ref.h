#ifndef STRUCTD_SHM_REF_H_
#define STRUCTD_SHM_REF_H_

// Ref: a 64-bit value naming one instance in one channel's arena.
//
//   bits 63..50  extent id + 1   (14 bits; 0 only in the null ref)
//   bits 49..26  offset / 16     (24 bits: extents up to 256 MiB)
//   bits 25..0   generation tag  (26 bits: low bits of the generation)
//
// A Ref is plain data: it can be stored in ref fields, sent to another
// process, printed and parsed. It carries no ownership by itself.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace structd::shm {

inline constexpr int kGenerationBits = 26;
inline constexpr uint32_t kGenerationMask = (1u << kGenerationBits) - 1;

class Ref {
 public:
  constexpr Ref() = default;
  static constexpr Ref FromBits(uint64_t bits) { return Ref(bits); }
  // REQUIRES: extent_id < kMaxExtents, offset % 16 == 0, offset < 256 MiB.
  static constexpr Ref Make(uint32_t extent_id, uint32_t offset,
                            uint32_t generation) {
    return Ref((uint64_t{extent_id + 1} << 50) |
               (uint64_t{offset / 16} << 26) | (generation & kGenerationMask));
  }

  constexpr uint64_t bits() const { return bits_; }
  constexpr bool is_null() const { return bits_ == 0; }
  explicit constexpr operator bool() const { return bits_ != 0; }

  // REQUIRES: !is_null() for extent_id().
  constexpr uint32_t extent_id() const {
    return static_cast<uint32_t>(bits_ >> 50) - 1;
  }
  constexpr uint32_t offset() const {
    return static_cast<uint32_t>((bits_ >> 26) & ((1u << 24) - 1)) * 16;
  }
  constexpr uint32_t generation_tag() const {
    return static_cast<uint32_t>(bits_) & kGenerationMask;
  }

  // "r:EXTENT:OFFSET:GEN" in hex, e.g. "r:0:1040:3". Round-trips via Parse.
  std::string ToString() const;
  // Accepts ToString()'s form and a bare 16-digit hex value ("0x" optional).
  static std::optional<Ref> Parse(std::string_view text);

  friend constexpr bool operator==(Ref a, Ref b) = default;

 private:
  explicit constexpr Ref(uint64_t bits) : bits_(bits) {}
  uint64_t bits_ = 0;
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_REF_H_
