#ifndef STRUCTD_TESTS_TESTING_DAEMON_PROCESS_H_
#define STRUCTD_TESTS_TESTING_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "testing/systemd_stand_in.h"
#include "testing/temp_dir.h"

namespace structd::testing {

// A real structd child process with its own socket and state directory in
// a fresh temp dir. Started by the constructor (waits until the socket
// accepts connections), stopped with SIGTERM (then SIGKILL) on destruction.
// STRUCTD_TEST_ARENA_BACKING=memfd starts it with --arena-backing memfd
// under Supervisor::kSystemd unless the test passes --arena-backing.
class DaemonProcess {
 public:
  // Who starts the daemon. kSystemd: a stand-in for systemd's descriptor
  // store (systemd_stand_in.h) keeps what the daemon hands it and passes
  // it back at every Start(), as systemd does across restarts.
  enum class Supervisor { kNone, kSystemd };
  explicit DaemonProcess(std::vector<std::string> extra_args = {},
                         Supervisor supervisor = Supervisor::kNone);
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  const std::string& socket() const { return socket_; }
  const std::string& state_dir() const { return state_dir_; }
  std::string target() const { return "unix:" + socket_; }
  pid_t pid() const { return pid_; }
  // Everything the daemon wrote to stdout and stderr so far (all its
  // runs). The destructor prints it to stderr.
  std::string Log() const;
  std::string log_path() const { return dir_.Sub("structd.log"); }
  bool running() const { return pid_ > 0; }

  // Sends SIGTERM and waits; returns the exit code (128 + signal if killed).
  int Stop();
  void Kill9();
  // Starts it again (same socket, state directory and flags) after Stop()
  // or Kill9(); waits until the socket accepts connections.
  void Start();
  // The systemd stand-in (null without Supervisor::kSystemd).
  SystemdStandIn* systemd() { return systemd_.get(); }

 private:
  TempDir dir_;
  std::string socket_;
  std::string state_dir_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  std::unique_ptr<SystemdStandIn> systemd_;
};

// Flags of a test that reaches into the arena's files in the state
// directory (what arena_backing = "files" allows).
inline std::vector<std::string> FileBackedArenas() { return {"--arena-backing", "files"}; }

// The structd binary under test.
std::string DaemonPath();

// Runs structd with `args` to completion; returns its exit code and
// combined output.
int RunDaemonToCompletion(const std::vector<std::string>& args,
                          std::string* output);

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_DAEMON_PROCESS_H_
