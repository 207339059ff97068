#include "daemon.h"
#include "systemd_descriptor_store.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_posix.h>

#include "absl/strings/str_cat.h"
#include "core/private_dir.h"
#include "structd/base/posix.h"
#include "core/random.h"
#include "structd/shm/mapping_guard.h"
#include "spdlog/spdlog.h"

namespace structd::server {
namespace {

absl::Status Errno(const std::string& what) { return base::ErrnoStatus(errno, what); }

// True if something accepts connections on `path`.
bool SocketIsLive(const std::string& path) { return static_cast<bool>(base::ConnectUnix(path)); }

}  // namespace

Daemon::Daemon(DaemonConfig config) : config_(std::move(config)) {}

Daemon::~Daemon() { Close(); }

void Daemon::Close() {
  Shutdown();
  if (accept_thread_.joinable()) accept_thread_.join();
  if (reap_thread_.joinable()) reap_thread_.join();
  // The last round of snapshots, with no client call in flight any more.
  if (snapshots_) snapshots_->Stop();
  if (memory_server_) memory_server_->Stop();
  if (listen_fd_) {
    listen_fd_.reset();
    unlink(config_.socket.c_str());
  }
  lock_fd_.reset();
  reserve_fd_.reset();
}

absl::Status Daemon::Start() {
  std::error_code ec;
  // Everything the daemon creates is its own: files 0600, directories 0700.
  umask(077);
  if (absl::Status s = MakePrivateDir(config_.state_dir); !s.ok()) {
    return absl::PermissionDeniedError(absl::StrCat("state dir ", config_.state_dir, ": ",
                                                    s.message()));
  }
  WarnIfStateMayBeRemoved();
  // A client that truncates a file the daemon maps must not kill it.
  shm::InstallSigbusGuard();
  RaiseDescriptorLimit();
  // Kept free for the moment descriptors run out (AcceptLoop).
  reserve_fd_ = base::UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  // One daemon per state directory: an flock the kernel drops if we die.
  std::string lock_path = config_.state_dir + "/structd.pid";
  lock_fd_ = base::UniqueFd(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock_fd_) return Errno("open " + lock_path);
  if (flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    std::string pid;
    std::ifstream(lock_path) >> pid;
    return absl::FailedPreconditionError(absl::StrCat(
        "state dir ", config_.state_dir, " is in use by another structd (pid ",
        pid.empty() ? "unknown" : pid,
        "); stop it first, or use another --state-dir"));
  }
  if (ftruncate(lock_fd_.get(), 0) == 0) {
    std::string pid = std::to_string(getpid()) + "\n";
    (void)base::WriteAll(lock_fd_.get(), pid);  // informational only
  }

  CoreOptions o = config_.ToCoreOptions();
  std::shared_ptr<SystemdDescriptorStore> systemd_store = SystemdDescriptorStore::FromEnvironment();
  o.descriptor_store = systemd_store;
  if (o.arena_memfd && o.descriptor_store == nullptr) {
    return absl::FailedPreconditionError(
        "arena_backing = \"memfd\" keeps channel memory only in descriptors, and there is no "
        "descriptor store to keep them across a restart ($NOTIFY_SOCKET is not set): run "
        "structd under systemd with FileDescriptorStoreMax= and NotifyAccess=main "
        "(deploy/systemd/structd.service), or use arena_backing = \"files\"");
  }
  // systemd 254+ says how many descriptors its store takes ($FDSTORE).
  if (const char* fdstore = getenv("FDSTORE"); fdstore != nullptr && o.arena_memfd) {
    char* end = nullptr;
    unsigned long n = std::strtoul(fdstore, &end, 10);
    if (end != fdstore && n < o.quotas.max_arena_files) {
      spdlog::warn("max_arena_files {} is above the unit's FileDescriptorStoreMax={}; using {}",
                   o.quotas.max_arena_files, n, n);
      o.quotas.max_arena_files = static_cast<uint32_t>(n);
    }
  }
  if (systemd_store != nullptr) {
    spdlog::info("systemd descriptor store: {} descriptors handed back; new channels' arenas "
                 "are {}", systemd_store->handed_back(),
                 o.arena_memfd ? "sealed memfds kept there" : "files");
  }
  absl::StatusOr<std::unique_ptr<Core>> core = Core::Open(o);
  if (!core.ok()) return core.status();
  core_ = std::move(*core);

  // The socket: in a directory nobody else controls (a squatted
  // /tmp/structd-UID is refused); refuse to steal a live one, replace a
  // stale one.
  absl::StatusOr<SocketAccess> access = ResolveSocketAccess(config_);
  if (!access.ok()) return access.status();
  if (absl::Status s = MakeSocketDir(std::filesystem::path(config_.socket).parent_path(),
                                     access->dir_mode, access->gid);
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("socket ", config_.socket, ": ", s.message()));
  }
  if (config_.socket.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path ", config_.socket, " is longer than ",
        sizeof(sockaddr_un::sun_path) - 1, " bytes (use a shorter --socket)"));
  }
  if (SocketIsLive(config_.socket)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "socket ", config_.socket,
        " is served by another process (stop it, or use another --socket)"));
  }
  unlink(config_.socket.c_str());
  listen_fd_ = base::UniqueFd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen_fd_) return Errno("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, config_.socket.c_str(), sizeof(addr.sun_path) - 1);
  if (bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Errno("bind " + config_.socket);
  }
  // Who may connect: the socket's mode and group (doc/security.md).
  if (chmod(config_.socket.c_str(), access->socket_mode) != 0 ||
      (access->gid != static_cast<gid_t>(-1) &&
       chown(config_.socket.c_str(), static_cast<uid_t>(-1), access->gid) != 0)) {
    return Errno("set the mode and group of " + config_.socket);
  }
  if (listen(listen_fd_.get(), 128) != 0) return Errno("listen " + config_.socket);

  MemoryServer::Options memory;
  memory.path = MemorySocketPath(config_.socket);
  memory.socket_mode = access->socket_mode;
  memory.gid = access->gid;
  memory.max_connections_per_process = config_.max_connections_per_process;
  memory.max_connections_per_uid = config_.max_sessions_per_uid;
  memory.max_connections = config_.max_sessions;
  memory.idle = std::chrono::milliseconds(config_.idle_connection_ms);
  memory_server_ = std::make_unique<MemoryServer>(core_.get(), memory);
  if (absl::Status s = memory_server_->Start(); !s.ok()) return s;
  session_service_ = std::make_unique<SessionService>(core_.get(), &peers_, memory.path);
  registry_service_ = std::make_unique<RegistryService>(core_.get(), &peers_);
  instances_service_ = std::make_unique<InstancesService>(core_.get(), &peers_);
  const auto started = std::chrono::steady_clock::now();
  metrics_ = std::make_unique<DaemonMetrics>(core_.get(), started);
  if (!config_.metrics_listen.empty()) {
    if (absl::Status s = metrics_->Serve(config_.metrics_listen); !s.ok()) return s;
  }
  admin_service_ = std::make_unique<AdminService>(
      core_.get(), &peers_,
      AdminService::Info{STRUCTD_VERSION, config_.socket, config_.state_dir, started,
                         metrics_.get()});
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.RegisterService(session_service_.get());
  builder.RegisterService(registry_service_.get());
  builder.RegisterService(instances_service_.get());
  builder.RegisterService(admin_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(metrics_->MakeRpcInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  // Connections arrive through AcceptLoop, not a listening port.
  server_ = builder.BuildAndStart();
  if (!server_) return absl::InternalError("grpc server failed to start");
  // Before clients can connect: a channel a reboot lost is restored
  // before anyone asks for it.
  snapshots_ = std::make_unique<PeriodicSnapshots>(core_.get(), config_.ToSnapshotOptions());
  if (absl::Status s = snapshots_->Start(); !s.ok()) return s;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  reap_thread_ = std::thread([this] { ReapLoop(); });
  spdlog::info("structd {} serving on {} (state {}, pid {})", STRUCTD_VERSION,
               config_.socket, config_.state_dir, getpid());
  if (!metrics_->ServingAddress().empty()) {
    spdlog::info("metrics on http://{}/metrics", metrics_->ServingAddress());
  }
  return absl::OkStatus();
}

// systemd-logind deletes a regular user's /dev/shm files (RemoveIPC=yes,
// its default) and $XDG_RUNTIME_DIR when the user's last login session
// ends: arenas there would vanish under running clients (doc/operations.md).
void Daemon::WarnIfStateMayBeRemoved() const {
  if (getuid() < 1000) return;  // system users and root are not affected
  const std::string& dir = config_.state_dir;
  if (dir.starts_with("/run/user/") || dir.starts_with("/dev/shm/")) {
    spdlog::warn(
        "state dir {} is removed by systemd-logind when uid {}'s last login session "
        "ends (RemoveIPC, runtime directory cleanup): run structd as a system service, "
        "enable lingering (loginctl enable-linger), or choose another --state-dir",
        dir, getuid());
  }
}

// The soft limit on descriptors is often 1,024 while the hard limit is far
// higher: every connection, extent mapping and ledger costs one.
void Daemon::RaiseDescriptorLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  rlim_t before = lim.rlim_cur;
  lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, rlim_t{1} << 20);
  if (setrlimit(RLIMIT_NOFILE, &lim) == 0) {
    spdlog::info("descriptor limit raised from {} to {}", before, lim.rlim_cur);
  }
}

// Logs `what` at most once per 10 s (a flood of refusals must not become a
// flood of log lines).
void Daemon::WarnThrottled(const std::string& what) {
  auto now = std::chrono::steady_clock::now();
  if (now - last_accept_warning_ < std::chrono::seconds(10)) {
    ++suppressed_accept_warnings_;
    return;
  }
  last_accept_warning_ = now;
  if (suppressed_accept_warnings_ > 0) {
    spdlog::warn("{} ({} similar messages suppressed)", what, suppressed_accept_warnings_);
  } else {
    spdlog::warn("{}", what);
  }
  suppressed_accept_warnings_ = 0;
}

void Daemon::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    int r = poll(&p, 1, 200);
    if (r <= 0) continue;
    int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the pending connection would make poll()
        // return at once forever. Free the reserve, take the connection
        // and close it (the client sees the refusal), take the reserve
        // back, and pause so the daemon does not spin.
        const std::string warning = absl::StrCat(
            "out of file descriptors (", strerror(errno),
            "): refusing new connections until some close (raise the descriptor limit, "
            "LimitNOFILE= in the systemd unit, or lower idle_connection_ms)");
        reserve_fd_.reset();
        base::UniqueFd refused(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        refused.reset();
        // Logged while the reserve is free: writing the log (and, in
        // sanitizer builds, checking it) may need a descriptor.
        WarnThrottled(warning);
        reserve_fd_ = base::UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    PeerCredentials peer;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      peer = {true, cred.pid, cred.uid, cred.gid, nullptr};
    }
    if (peer.known &&
        peers_.OpenConnections(peer.pid, peer.uid) >= config_.max_connections_per_process) {
      close(fd);
      WarnThrottled(absl::StrCat("pid ", peer.pid, " (uid ", peer.uid, ") already has ",
                                 config_.max_connections_per_process,
                                 " connections open: refusing more (max_connections_per_process)"));
      continue;
    }
    // Recorded before gRPC sees the connection, so its first call finds it.
    peers_.Record(fd, peer);
    grpc::AddInsecureChannelFromFd(server_.get(), fd);
  }
}

void Daemon::ReapLoop() {
  while (!stopping_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (const std::string& id : core_->ExpiredSessions()) {
      spdlog::warn("session {} missed its lease of {} ms: ending it",
                   id.substr(0, 8), config_.lease_ms);
      core_->Detach(id);
      session_service_->Cancel(id);
    }
    core_->ReapOrphans();
    core_->ReapClaims();
    core_->CountExits();
    core_->DropIdleChannels();
    // Members hold descriptors of the arena files and could resize them:
    // about once a second, put them back (doc/security.md).
    if (++sweeps_ % 5 == 0) core_->RestoreFileSizes();
    if (size_t n = peers_.Sweep(std::chrono::milliseconds(config_.idle_connection_ms))) {
      spdlog::info("closed {} connections that made no call within {} ms", n,
                   config_.idle_connection_ms);
    }
  }
}

void Daemon::Wait() {
  if (server_) server_->Wait();
}

void Daemon::Shutdown() {
  if (stopping_.exchange(true)) return;
  if (server_) {
    spdlog::info("structd shutting down");
    // Probes see NOT_SERVING while in-flight calls drain.
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
    session_service_->AnnounceShutdown("daemon stopping");
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
  }
}

}  // namespace structd::server
