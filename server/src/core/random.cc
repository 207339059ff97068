#include "core/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_format.h"

namespace structd::server {

uint64_t RandomU64() {
  uint64_t v;
  uint8_t* p = reinterpret_cast<uint8_t*>(&v);
  size_t got = 0;
  while (got < sizeof v) {
    ssize_t n = getrandom(p + got, sizeof v - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // No entropy source: never fall back to a weak one.
      std::abort();
    }
    got += static_cast<size_t>(n);
  }
  return v;
}

shm::TypeToken RandomToken() {
  shm::TypeToken t;
  while (t.is_zero()) t = {RandomU64(), RandomU64()};
  return t;
}

std::string RandomHex128() {
  return absl::StrFormat("%016x%016x", RandomU64(), RandomU64());
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace structd::server
