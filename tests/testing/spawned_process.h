#ifndef STRUCTD_TESTS_TESTING_SPAWNED_PROCESS_H_
#define STRUCTD_TESTS_TESTING_SPAWNED_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace structd::testing {

// A program started with fork()+exec() (safe after gRPC started threads,
// unlike running test code in a forked child), its stdout readable line by
// line. It dies with the test process (PR_SET_PDEATHSIG), and the
// destructor kills and reaps it if it is still running.
class SpawnedProcess {
 public:
  // Where the program's stderr goes: the test's own, or the pipe that
  // ReadLine/ReadAll read (mixed with stdout).
  enum class Stderr { kInherit, kWithStdout };
  explicit SpawnedProcess(const std::vector<std::string>& argv, Stderr err = Stderr::kInherit);
  ~SpawnedProcess();
  SpawnedProcess(const SpawnedProcess&) = delete;
  SpawnedProcess& operator=(const SpawnedProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The next line of stdout without its newline; "" at EOF or after
  // `timeout`.
  std::string ReadLine(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Everything the program writes until it closes stdout (normally: exits),
  // or until `timeout`.
  std::string ReadAll(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Waits for exit: the exit code, 128 + signal if killed, -1 on timeout
  // (the process is then killed).
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  void Kill(int sig);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_SPAWNED_PROCESS_H_
