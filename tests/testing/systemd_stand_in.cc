#include "testing/systemd_stand_in.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace structd::testing {

SystemdStandIn::SystemdStandIn(std::string socket_path) : path_(std::move(socket_path)) {
  sock_ = base::UniqueFd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (!sock_ || path_.size() >= sizeof addr.sun_path) {
    throw std::runtime_error("systemd stand-in: cannot create " + path_);
  }
  std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
  unlink(path_.c_str());
  if (bind(sock_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("systemd stand-in: cannot bind " + path_);
  }
  // Like systemd: read as messages come (a full queue would block the
  // daemon's sendmsg).
  reader_ = std::thread([this] { ReadLoop(); });
}

SystemdStandIn::~SystemdStandIn() {
  stop_ = true;
  reader_.join();
  unlink(path_.c_str());
}

void SystemdStandIn::ReadLoop() {
  while (!stop_.load()) {
    pollfd p{sock_.get(), POLLIN, 0};
    if (poll(&p, 1, 20) > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      ReadPending();
    }
  }
}

void SystemdStandIn::ReadPending() {
  while (true) {
    char text[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(ucred))];
    iovec iov{text, sizeof text - 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(sock_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return;
    text[n] = '\0';
    std::vector<base::UniqueFd> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
    std::string body(text, static_cast<size_t>(n));
    bool store = false, remove = false;
    std::string name = "stored";  // systemd's default FDNAME
    size_t at = 0;
    while (at < body.size()) {
      size_t end = body.find('\n', at);
      if (end == std::string::npos) end = body.size();
      std::string line = body.substr(at, end - at);
      if (line == "FDSTORE=1") store = true;
      if (line == "FDSTOREREMOVE=1") remove = true;
      if (line.starts_with("FDNAME=")) name = line.substr(7);
      at = end + 1;
    }
    if (remove) {
      std::erase_if(kept_, [&](const auto& k) { return k.first == name; });
    } else if (store) {
      for (base::UniqueFd& fd : fds) kept_.emplace_back(name, std::move(fd));
    }
  }
}

std::vector<std::string> SystemdStandIn::Names() {
  std::lock_guard<std::mutex> lock(mu_);
  ReadPending();
  std::vector<std::string> names;
  for (const auto& [name, fd] : kept_) names.push_back(name);
  return names;
}

void SystemdStandIn::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  ReadPending();
  kept_.clear();
}

SystemdStandIn::ChildSetup SystemdStandIn::PrepareChild() {
  std::lock_guard<std::mutex> lock(mu_);
  ReadPending();
  ChildSetup s;
  std::string names;
  for (const auto& [name, fd] : kept_) {
    s.fds.push_back(fd.get());
    if (!names.empty()) names += ':';
    names += name;
  }
  s.env.push_back("NOTIFY_SOCKET=" + path_);
  if (!s.fds.empty()) {
    s.env.push_back("LISTEN_FDS=" + std::to_string(s.fds.size()));
    s.env.push_back("LISTEN_FDNAMES=" + names);
  }
  return s;
}

void SystemdStandIn::ApplyInChild(ChildSetup& s) {
  const int n = static_cast<int>(s.fds.size());
  // Out of the target range first, so no source is overwritten early.
  for (int& fd : s.fds) fd = fcntl(fd, F_DUPFD, 3 + n + 64);
  for (int i = 0; i < n; ++i) {
    dup2(s.fds[static_cast<size_t>(i)], 3 + i);  // dup2 clears close-on-exec
    close(s.fds[static_cast<size_t>(i)]);
  }
  // LISTEN_PID=<getpid()>, written into the preallocated string.
  char digits[20];
  int len = 0;
  for (pid_t pid = getpid(); pid > 0; pid /= 10) digits[len++] = static_cast<char>('0' + pid % 10);
  char* out = s.listen_pid.data() + 11;
  for (int i = 0; i < len; ++i) out[i] = digits[len - 1 - i];
  out[len] = '\0';
}

}  // namespace structd::testing
