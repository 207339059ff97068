#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "testing/shm_fixture.h"

namespace structd::testing {

uint64_t TestSeed() {
  uint64_t seed;
  if (const char* env = std::getenv("STRUCTD_TEST_SEED")) {
    seed = std::strtoull(env, nullptr, 0);
  } else {
    seed = static_cast<uint64_t>(
        std::chrono::steady_clock::now().time_since_epoch().count());
  }
  std::printf("[ SEED     ] STRUCTD_TEST_SEED=%llu\n",
              static_cast<unsigned long long>(seed));
  return seed;
}

int FaultScale() {
  int scale = 1;
  if (const char* env = std::getenv("STRUCTD_FAULT_SCALE")) scale = std::atoi(env);
  if (scale < 1) scale = 1;
  std::printf("[ SCALE    ] STRUCTD_FAULT_SCALE=%d\n", scale);
  return scale;
}

}  // namespace structd::testing
