#ifndef STRUCTD_TESTS_BENCH_BENCH_IO_H_
#define STRUCTD_TESTS_BENCH_BENCH_IO_H_

// Whole writes and reads on a descriptor, for benchmarks that talk to
// their child processes over a socket or a pipe. False on EOF or error.

#include <unistd.h>

#include <cstddef>

namespace structd::bench {

inline bool WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

inline bool ReadAll(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace structd::bench

#endif  // STRUCTD_TESTS_BENCH_BENCH_IO_H_
