// A stand-in for libFuzzer's main when the fuzz targets are built without
// clang's -fsanitize=fuzzer (the default g++ build): it runs every file of
// the corpus directories given, then random mutations of them until
// -max_total_time=SECONDS, with a printed -seed=N to repeat a run. It
// accepts the libFuzzer flags the test suite passes, so one ctest command
// serves both builds. Not coverage-guided: for that, build with
// -DSTRUCTD_LIBFUZZER=ON (clang) and run the target directly.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string Mutate(std::string s, std::mt19937_64& rng, const std::vector<std::string>& corpus) {
  int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 6) {
      case 0:  // flip a bit
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // set a byte to an interesting value
        if (!s.empty()) {
          const char interesting[] = {0, 1, 0x7f, static_cast<char>(0x80), static_cast<char>(0xff), 8, 16, 64};
          s[rng() % s.size()] = interesting[rng() % sizeof interesting];
        }
        break;
      case 2:  // insert random bytes
        s.insert(s.begin() + static_cast<long>(s.empty() ? 0 : rng() % s.size()),
                 static_cast<size_t>(1 + rng() % 8), static_cast<char>(rng()));
        break;
      case 3:  // erase a range
        if (!s.empty()) {
          size_t at = rng() % s.size();
          s.erase(at, 1 + rng() % std::min<size_t>(8, s.size() - at));
        }
        break;
      case 4:  // splice with another input
        if (!corpus.empty()) {
          const std::string& o = corpus[rng() % corpus.size()];
          if (!o.empty()) s += o.substr(rng() % o.size());
        }
        break;
      default:  // truncate
        if (!s.empty()) s.resize(rng() % s.size());
        break;
    }
  }
  if (s.size() > 4096) s.resize(4096);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  double max_seconds = 10;
  uint64_t seed = std::random_device{}();
  std::vector<std::string> corpus;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("-max_total_time=", 0) == 0) {
      max_seconds = std::atof(arg.c_str() + 16);
    } else if (arg.rfind("-seed=", 0) == 0) {
      seed = std::strtoull(arg.c_str() + 6, nullptr, 10);
    } else if (arg[0] == '-') {
      continue;  // other libFuzzer flags
    } else if (std::filesystem::is_directory(arg)) {
      for (const auto& e : std::filesystem::directory_iterator(arg)) {
        std::ifstream in(e.path(), std::ios::binary);
        corpus.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
    } else {
      std::ifstream in(arg, std::ios::binary);
      corpus.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  std::printf("fuzz_driver: %zu corpus inputs, -seed=%llu, -max_total_time=%g\n", corpus.size(),
              static_cast<unsigned long long>(seed), max_seconds);
  std::fflush(stdout);
  for (const std::string& s : corpus) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  std::mt19937_64 rng(seed);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(max_seconds);
  uint64_t runs = corpus.size();
  while (std::chrono::steady_clock::now() < deadline) {
    std::string base = corpus.empty() ? std::string() : corpus[rng() % corpus.size()];
    std::string input = Mutate(std::move(base), rng, corpus);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
    ++runs;
  }
  std::printf("fuzz_driver: %llu runs, no crash\n", static_cast<unsigned long long>(runs));
  return 0;
}
