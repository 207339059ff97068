#ifndef STRUCTD_TESTS_TESTING_SHM_FIXTURE_H_
#define STRUCTD_TESTS_TESTING_SHM_FIXTURE_H_

// Helpers for tests that use the shm library across fork()ed processes.

#include <sys/mman.h>

#include <cstddef>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "structd/shm/allocator.h"
#include "structd/shm/arena.h"
#include "structd/shm/layout.h"
#include "testing/temp_dir.h"

namespace structd::testing {

// An anonymous shared mapping that fork()ed children share with the test,
// for results and logs that must survive a child's death.
template <typename T>
class SharedBlock {
 public:
  explicit SharedBlock(size_t count = 1) : count_(count) {
    void* p = mmap(nullptr, sizeof(T) * count, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    p_ = static_cast<T*>(p);
  }
  ~SharedBlock() { munmap(p_, sizeof(T) * count_); }
  SharedBlock(const SharedBlock&) = delete;
  SharedBlock& operator=(const SharedBlock&) = delete;
  T* get() const { return p_; }
  T& operator[](size_t i) const { return p_[i]; }

 private:
  T* p_;
  size_t count_;
};

// An arena with its owner-side allocator in a fresh temp dir.
struct OwnedArena {
  TempDir dir;
  std::string path = dir.Sub("arena");
  std::unique_ptr<shm::Arena> arena;
  std::unique_ptr<shm::Allocator> alloc;

  explicit OwnedArena(uint64_t extent_size = 1 << 20,
                      uint32_t max_extents = 64) {
    shm::ArenaOptions o;
    o.extent_size = extent_size;
    o.max_extents = max_extents;
    auto a = shm::Arena::Create(path, o);
    if (!a.ok()) throw std::runtime_error(std::string(a.status().message()));
    arena = std::move(*a);
    auto al = shm::Allocator::Adopt(arena.get());
    if (!al.ok()) throw std::runtime_error(std::string(al.status().message()));
    alloc = std::move(*al);
  }

  // Opens the arena again, as another process does (call after fork()).
  std::unique_ptr<shm::Arena> OpenAgain(
      shm::Access access = shm::Access::kReadWrite) const {
    auto a = shm::Arena::Open(path, access);
    if (!a.ok()) return nullptr;
    return std::move(*a);
  }
};

// Seed for randomized tests: STRUCTD_TEST_SEED if set, else time-based.
// Printed so a failing run can be repeated.
uint64_t TestSeed();

// How many times longer randomized fault tests run: STRUCTD_FAULT_SCALE
// (default 1; the long mode of doc/recovery.md uses 50). Printed.
int FaultScale();

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_SHM_FIXTURE_H_
