#include "core/secret_digest.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/escaping.h"

namespace structd::server {

SecretDigest SecretDigest::Of(std::string_view secret) {
  SecretDigest d;
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), d.bytes_.data());
  d.set_ = true;
  return d;
}

std::optional<SecretDigest> SecretDigest::FromHex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  for (char ch : hex) {
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return std::nullopt;
  }
  std::string bytes = absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
  SecretDigest d;
  for (size_t i = 0; i < 32; ++i) d.bytes_[i] = static_cast<uint8_t>(bytes[i]);
  d.set_ = true;
  return d;
}

bool SecretDigest::Matches(std::string_view presented) const {
  if (!set_ || presented.empty()) return false;
  SecretDigest other = Of(presented);
  return CRYPTO_memcmp(bytes_.data(), other.bytes_.data(), bytes_.size()) == 0;
}

std::string SecretDigest::ToHex() const {
  if (!set_) return "";
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes_.data()), bytes_.size()));
}

}  // namespace structd::server
