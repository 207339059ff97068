// structd: the daemon. Flags and config in config.cc; the work in daemon.cc.
#include <malloc.h>
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <thread>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "config.h"
#include "daemon.h"
#include "log_format.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  structd::server::DaemonConfig config;
  switch (structd::server::LoadConfig(argc, argv, config)) {
    case structd::server::ParseOutcome::kExitOk:
      return 0;
    case structd::server::ParseOutcome::kExitUsage:
      return 2;
    case structd::server::ParseOutcome::kRun:
      break;
  }
  // Logs go to stderr (spdlog's default logger writes to stdout).
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_formatter(structd::server::MakeLogFormatter(config.log_format));
  // Large transient buffers (a batch reply of 100,000 refs is ~1 MB) go
  // back to the system when freed. Without a fixed threshold glibc raises
  // it after the first such free and keeps later ones in the heap, so the
  // daemon's private memory would creep up with traffic although nothing
  // per instance lives there (BENCHMARKS.md, scale).
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  // SIGTERM and SIGINT are handled by one thread; every other thread
  // inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // A file-size limit must fail the write (EFBIG: RESOURCE_EXHAUSTED), not
  // kill the daemon.
  signal(SIGXFSZ, SIG_IGN);

  structd::server::Daemon daemon(config);
  if (absl::Status s = daemon.Start(); !s.ok()) {
    spdlog::error("structd: {}", std::string(s.message()));
    return 1;
  }
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("structd: received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    daemon.Shutdown();
  });
  daemon.Wait();
  // Wake the signal thread if the server stopped for another reason.
  kill(getpid(), SIGTERM);
  waiter.join();
  daemon.Close();
  spdlog::info("structd stopped");
  spdlog::shutdown();
  // Exit without destroying the gRPC server: its destructor calls
  // grpc_shutdown, which in gRPC 1.51 (Debian 12) sometimes waits ~10 s to
  // join an executor thread parked in epoll_wait on a timer (seen in about
  // one stop in six). Nothing is lost: state is on disk and in the arena,
  // as it must be for a kill -9 (doc/recovery.md). LeakSanitizer would
  // not run after _Exit, so an ASan build checks for leaks here; the
  // server, still alive on this stack, is reachable and not a leak.
#if defined(__SANITIZE_ADDRESS__)
  __lsan_do_leak_check();
#endif
  std::_Exit(0);
}
