#ifndef STRUCTD_TESTS_TESTING_CHILD_PROCESS_H_
#define STRUCTD_TESTS_TESTING_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>

namespace structd::testing {

// A fork()ed child running a function. The child's exit code is the
// function's return value; a child that throws or fails exits with 99.
// The destructor kills (SIGKILL) and reaps a child still running, so a
// failing test never leaves processes behind.
//
// In the child, use only what is safe after fork() in a process that may
// have had threads: the tests fork before starting any.
class ChildProcess {
 public:
  explicit ChildProcess(std::function<int()> body);
  ~ChildProcess();
  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits for exit; returns the exit code, or 128 + signal if killed, or -1
  // on timeout (the child is then killed).
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  void Kill(int sig);

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// Exit code 128 + SIGKILL, as Wait() reports a child killed with SIGKILL.
inline constexpr int kKilledBySigkill = 128 + 9;

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_CHILD_PROCESS_H_
