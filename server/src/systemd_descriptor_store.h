#ifndef STRUCTD_SERVER_SYSTEMD_DESCRIPTOR_STORE_H_
#define STRUCTD_SERVER_SYSTEMD_DESCRIPTOR_STORE_H_

// DescriptorStore on systemd's file descriptor store (FDSTORE=1 over
// $NOTIFY_SOCKET; handed back as $LISTEN_FDS / $LISTEN_FDNAMES). The unit
// needs FileDescriptorStoreMax= and NotifyAccess=main
// (deploy/systemd/structd.service). systemd keeps the descriptors while
// the service restarts (after a crash or `systemctl restart`) and empties
// the store when it is stopped (systemd 252; FileDescriptorStorePreserve=
// arrived in 254). doc/operations.md.

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/descriptor_store.h"

namespace structd::server {

class SystemdDescriptorStore final : public DescriptorStore {
 public:
  // Takes the descriptors systemd passed to this process (and unsets the
  // LISTEN_* variables). Null when there is no $NOTIFY_SOCKET to keep new
  // ones in: the daemon does not run under systemd (or a stand-in).
  static std::shared_ptr<SystemdDescriptorStore> FromEnvironment();

  void Keep(const std::string& name, int fd) override;
  void Forget(const std::string& name) override;
  std::map<std::string, base::UniqueFd> Take(const std::string& prefix) override;
  std::map<std::string, base::UniqueFd> TakeRest() override;
  // How many descriptors were handed back at start.
  size_t handed_back() const { return handed_back_; }

 private:
  std::mutex mu_;
  std::map<std::string, base::UniqueFd> handed_;  // guarded by mu_
  size_t handed_back_ = 0;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_SYSTEMD_DESCRIPTOR_STORE_H_
