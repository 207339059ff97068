#ifndef STRUCTD_TESTS_TESTING_SYSTEMD_STAND_IN_H_
#define STRUCTD_TESTS_TESTING_SYSTEMD_STAND_IN_H_

// What systemd does for a service with FileDescriptorStoreMax= and
// NotifyAccess=main, for the daemon a test starts (DaemonProcess): a
// $NOTIFY_SOCKET whose FDSTORE=1 / FDSTOREREMOVE=1 messages it obeys, and
// at each start the kept descriptors passed as $LISTEN_FDS (from fd 3),
// $LISTEN_PID and $LISTEN_FDNAMES (sd_listen_fds(3), sd_notify(3)).

#include <sys/types.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "structd/base/posix.h"

namespace structd::testing {

class SystemdStandIn {
 public:
  // Binds the notify socket at `socket_path` and starts reading it.
  explicit SystemdStandIn(std::string socket_path);
  ~SystemdStandIn();
  SystemdStandIn(const SystemdStandIn&) = delete;
  SystemdStandIn& operator=(const SystemdStandIn&) = delete;

  // Names kept now, after every message sent so far was read.
  std::vector<std::string> Names();
  // systemctl stop: the store is emptied.
  void Clear();

  // Called in the parent before fork: what the child needs (no allocation
  // happens after fork).
  struct ChildSetup {
    std::vector<int> fds;               // to become 3, 4, ...
    std::vector<std::string> env;       // NOTIFY_SOCKET=, LISTEN_FDS=, LISTEN_FDNAMES=
    std::string listen_pid = "LISTEN_PID=" + std::string(20, '\0');
  };
  ChildSetup PrepareChild();
  // In the child after fork, before exec: places the descriptors and
  // fills in LISTEN_PID. Only async-signal-safe calls.
  static void ApplyInChild(ChildSetup& setup);

 private:
  void ReadLoop();
  void ReadPending();  // REQUIRES: mu_

  std::string path_;
  base::UniqueFd sock_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::pair<std::string, base::UniqueFd>> kept_;  // guarded by mu_
  std::thread reader_;
};

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_SYSTEMD_STAND_IN_H_
