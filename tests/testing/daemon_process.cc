#include "testing/daemon_process.h"

#include "testing/unix_socket.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <stdexcept>
#include <thread>

namespace structd::testing {
namespace {

bool CanConnect(const std::string& path) {
  int fd = ConnectUnix(path);
  if (fd < 0) return false;
  close(fd);
  return true;
}

pid_t Spawn(const std::vector<std::string>& args, int out_fd,
            SystemdStandIn* systemd = nullptr) {
  // Everything the child needs is built before fork (a forked child of a
  // threaded process must not allocate).
  SystemdStandIn::ChildSetup setup;
  std::vector<char*> envp;
  if (systemd != nullptr) {
    setup = systemd->PrepareChild();
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view v(*e);
      if (v.starts_with("NOTIFY_SOCKET=") || v.starts_with("LISTEN_")) continue;
      envp.push_back(*e);
    }
    for (std::string& e : setup.env) envp.push_back(e.data());
    envp.push_back(setup.listen_pid.data());
    envp.push_back(nullptr);
  }
  std::vector<char*> argv;
  std::string bin = STRUCTD_DAEMON_PATH;
  argv.push_back(bin.data());
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    // Die with the test: a test killed by a ctest timeout must not leave
    // a daemon behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (out_fd >= 0) {
      dup2(out_fd, 1);
      dup2(out_fd, 2);
    }
    if (systemd != nullptr) {
      SystemdStandIn::ApplyInChild(setup);
      execve(bin.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

std::string DaemonPath() { return STRUCTD_DAEMON_PATH; }

DaemonProcess::DaemonProcess(std::vector<std::string> extra_args, Supervisor supervisor) {
  // STRUCTD_TEST_ARENA_BACKING=memfd runs every daemon a test starts with
  // sealed memfds under the systemd stand-in (an opt-in pass of the whole
  // suite). Tests of what files allow pin --arena-backing files.
  const char* backing = getenv("STRUCTD_TEST_ARENA_BACKING");
  bool pinned = std::find(extra_args.begin(), extra_args.end(), "--arena-backing") !=
                extra_args.end();
  if (backing != nullptr && std::string_view(backing) == "memfd" && !pinned &&
      supervisor == Supervisor::kNone) {
    supervisor = Supervisor::kSystemd;
    extra_args.insert(extra_args.begin(), {"--arena-backing", "memfd"});
  }
  if (supervisor == Supervisor::kSystemd) {
    systemd_ = std::make_unique<SystemdStandIn>(dir_.Sub("notify.sock"));
  }
  socket_ = dir_.Sub("structd.sock");
  state_dir_ = dir_.Sub("state");
  args_ = {"--socket", socket_, "--state-dir", state_dir_, "--extent-size", "1048576",
           "--log-level", "warn"};
  args_.insert(args_.end(), extra_args.begin(), extra_args.end());
  Start();
}

void DaemonProcess::Start() {
  if (pid_ > 0) return;
  // Appended across restarts; shown on stderr when the daemon goes.
  int log = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  pid_ = Spawn(args_, log, systemd_.get());
  if (log >= 0) close(log);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!CanConnect(socket_)) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("structd exited during start-up");
    }
    if (std::chrono::steady_clock::now() > deadline) {
      Kill9();
      throw std::runtime_error("structd did not start within 20 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) Stop();
  std::string log = Log();
  if (!log.empty()) std::cerr << "structd's output:\n" << log << std::flush;
}

std::string DaemonProcess::Log() const {
  std::ifstream in(log_path());
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int DaemonProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 1000; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Kill9();
  return -1;
}

void DaemonProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int RunDaemonToCompletion(const std::vector<std::string>& args,
                          std::string* output) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return -1;
  pid_t pid = Spawn(args, pipefd[1]);
  close(pipefd[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) {
    if (output) output->append(buf, static_cast<size_t>(n));
  }
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace structd::testing
