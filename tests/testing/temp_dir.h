#ifndef STRUCTD_TESTS_TESTING_TEMP_DIR_H_
#define STRUCTD_TESTS_TESTING_TEMP_DIR_H_

#include <string>

namespace structd::testing {

// A fresh private directory, removed with everything in it on destruction.
// Made on tmpfs (/dev/shm) when there is one, like the daemon's state, else
// under $TMPDIR or /tmp. Unique per test, so `ctest -j` never collides.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_TEMP_DIR_H_
