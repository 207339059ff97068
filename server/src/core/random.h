#ifndef STRUCTD_SERVER_CORE_RANDOM_H_
#define STRUCTD_SERVER_CORE_RANDOM_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "structd/shm/type_token.h"

namespace structd::server {

// Cryptographically random values (getrandom(2)).
uint64_t RandomU64();
shm::TypeToken RandomToken();
// 128 random bits as 32 lowercase hex digits: capabilities, secrets, ids.
std::string RandomHex128();
// Compares two secrets in time independent of where they differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_RANDOM_H_
