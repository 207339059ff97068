#ifndef STRUCTD_TESTS_TESTING_THREAD_STATE_H_
#define STRUCTD_TESTS_TESTING_THREAD_STATE_H_

// Whether a thread (of this or another process) is asleep in the kernel,
// from /proc: how a test knows that a waiter has gone to sleep before it
// notifies.

#include <sys/types.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

namespace structd::testing {

// The scheduler state letter of thread `tid` of process `pid` ('S': asleep,
// 'R': running, ...) from /proc/PID/task/TID/stat, or '?' if it is gone.
inline char ThreadState(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) +
                   "/stat");
  std::string line;
  if (!std::getline(in, line)) return '?';
  // "TID (COMM) STATE ...": COMM may hold spaces and parentheses.
  size_t close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

// Waits (up to `limit`) until the thread sleeps; false if it never did. A
// waiter that does nothing between announcing itself and its wait call is
// then asleep in that wait.
inline bool AwaitAsleep(pid_t pid, pid_t tid,
                        std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (ThreadState(pid, tid) == 'S') return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_THREAD_STATE_H_
