#ifndef STRUCTD_TESTS_TESTING_THREAD_STATE_H_
#define STRUCTD_TESTS_TESTING_THREAD_STATE_H_

// Whether a thread (of this or another process) is asleep in a futex
// wait, from /proc: how a test knows that a waiter has gone to sleep
// before it notifies.

#include <sys/syscall.h>
#include <sys/types.h>

#include <cstdlib>

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

// The number of the system call thread `tid` is in, from the first field
// of /proc/PID/task/TID/syscall; -1 if it runs in user space, -2 if the
// file cannot be read (no ptrace access, or a kernel without it).
inline long BlockedSyscall(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) +
                   "/syscall");
  std::string first;
  if (!(in >> first)) return -2;
  if (first == "running") return -1;
  return std::strtol(first.c_str(), nullptr, 10);
}

// Waits (up to `limit`) until the thread sleeps in futex or futex_waitv
// (only 'S' where /proc/.../syscall cannot be read); false if it never
// did. A sleep elsewhere (a page fault's I/O, a log write) does not count.
inline bool AwaitAsleep(pid_t pid, pid_t tid,
                        std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  constexpr long kFutexWaitv = 449;  // the same on every architecture
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (ThreadState(pid, tid) == 'S') {
      const long nr = BlockedSyscall(pid, tid);
      if (nr == SYS_futex || nr == kFutexWaitv || nr == -2) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_THREAD_STATE_H_
