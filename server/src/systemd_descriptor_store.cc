#include "systemd_descriptor_store.h"

#include <fcntl.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace structd::server {

std::shared_ptr<SystemdDescriptorStore> SystemdDescriptorStore::FromEnvironment() {
  std::shared_ptr<SystemdDescriptorStore> store(new SystemdDescriptorStore());
  char** names = nullptr;
  int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  if (n < 0) {
    spdlog::error("systemd: cannot read the descriptors passed at start: {}", strerror(-n));
    n = 0;
  }
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    std::string name = names != nullptr && names[i] != nullptr ? names[i] : "unknown";
    // LISTEN_FDS descriptors arrive without close-on-exec.
    base::UniqueFd owned(fcntl(fd, F_DUPFD_CLOEXEC, 0));
    close(fd);
    if (owned) store->handed_.emplace(std::move(name), std::move(owned));
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) free(names[i]);
    free(names);
  }
  store->handed_back_ = store->handed_.size();
  if (getenv("NOTIFY_SOCKET") == nullptr) {
    if (!store->handed_.empty()) {
      spdlog::warn("systemd: {} descriptors were passed at start but there is no "
                   "$NOTIFY_SOCKET to keep them in", store->handed_.size());
    }
    return nullptr;
  }
  return store;
}

void SystemdDescriptorStore::Keep(const std::string& name, int fd) {
  std::string state = absl::StrCat("FDSTORE=1\nFDNAME=", name);
  int rc = sd_pid_notify_with_fds(0, 0, state.c_str(), &fd, 1);
  if (rc <= 0) {
    spdlog::error("systemd: cannot keep '{}' in the descriptor store ({}); it is lost if the "
                  "daemon restarts", name, rc < 0 ? strerror(-rc) : "no $NOTIFY_SOCKET");
  }
}

void SystemdDescriptorStore::Forget(const std::string& name) {
  std::string state = absl::StrCat("FDSTOREREMOVE=1\nFDNAME=", name);
  if (int rc = sd_pid_notify(0, 0, state.c_str()); rc < 0) {
    spdlog::warn("systemd: cannot remove '{}' from the descriptor store: {}", name,
                 strerror(-rc));
  }
}

std::map<std::string, base::UniqueFd> SystemdDescriptorStore::Take(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, base::UniqueFd> out;
  for (auto it = handed_.lower_bound(prefix); it != handed_.end() && it->first.starts_with(prefix);) {
    out.emplace(it->first, std::move(it->second));
    it = handed_.erase(it);
  }
  return out;
}

std::map<std::string, base::UniqueFd> SystemdDescriptorStore::TakeRest() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, base::UniqueFd> out;
  out.swap(handed_);
  return out;
}

}  // namespace structd::server
