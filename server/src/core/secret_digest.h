#ifndef STRUCTD_SERVER_CORE_SECRET_DIGEST_H_
#define STRUCTD_SERVER_CORE_SECRET_DIGEST_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace structd::server {

// What the daemon keeps of a secret it issued (a channel capability, a
// session secret, the admin capability): its SHA-256, never the secret.
// A file or a core dump of the daemon's state then names no capability a
// reader could present. Secrets are 128 random bits, so an unsalted hash
// is enough: there is no dictionary to try.
//
// Thread safety: a value type; const methods may be called concurrently.
class SecretDigest {
 public:
  SecretDigest() = default;  // matches nothing
  static SecretDigest Of(std::string_view secret);
  // Parses ToHex()'s 64 lowercase hex digits; nullopt for anything else.
  static std::optional<SecretDigest> FromHex(std::string_view hex);

  // True if `presented` hashes to this digest, in time independent of
  // where the digests differ. Never true for an empty `presented` or an
  // empty (default) digest.
  bool Matches(std::string_view presented) const;
  bool empty() const { return !set_; }
  std::string ToHex() const;

 private:
  std::array<uint8_t, 32> bytes_{};
  bool set_ = false;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_SECRET_DIGEST_H_
