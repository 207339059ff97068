#include "client/src/connection.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "structd/client/channel.h"
#include "structd/base/trusted_path.h"
#include "structd/shm/default_paths.h"

namespace structd::client::internal {

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

bool SocketExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

std::optional<uid_t> ExpectedDaemonUid(std::optional<uid_t> configured) {
  if (configured) return configured;
  const char* env = std::getenv("STRUCTD_DAEMON_UID");
  if (env == nullptr || *env == '\0') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(env, &end, 10);
  // (uid_t)-1 means "no uid" to the kernel: never a daemon's.
  if (*end != '\0' || errno != 0 || v >= UINT32_MAX) return std::nullopt;
  return static_cast<uid_t>(v);
}

std::set<uid_t> TrustedDaemonUids(const std::string& socket, std::optional<uid_t> daemon_uid) {
  std::set<uid_t> trusted{0, getuid()};
  if (daemon_uid) {
    trusted.insert(*daemon_uid);
    return trusted;
  }
  // A place root provisioned for the daemon (/run/structd of the system
  // service): its owner is the daemon's uid. Only when its parent is
  // root's and writable by nobody else, and it is no symlink.
  std::filesystem::path dir =
      std::filesystem::absolute(std::filesystem::path(socket).parent_path()).lexically_normal();
  struct stat st, parent;
  if (lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
      lstat(dir.parent_path().c_str(), &parent) == 0 && S_ISDIR(parent.st_mode) &&
      parent.st_uid == 0 && (parent.st_mode & (S_IWGRP | S_IWOTH)) == 0) {
    trusted.insert(st.st_uid);
  }
  return trusted;
}

namespace {

absl::Status Untrusted(const std::string& socket, uid_t uid) {
  return absl::PermissionDeniedError(absl::StrCat(
      "socket ", socket, ": served by a process of uid ", uid,
      ", which is not root, your uid or the daemon's expected uid; another user may be "
      "impersonating the daemon, so no capability was sent (if that uid runs the daemon, "
      "set STRUCTD_DAEMON_UID=",
      uid, " or ClientOptions::daemon_uid)"));
}

}  // namespace

absl::Status CheckPeerIsDaemon(int fd, const std::string& socket,
                               const std::set<uid_t>& trusted) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return absl::UnavailableError(absl::StrCat("no structd at ", socket, ": ", strerror(errno)));
  }
  if (!trusted.count(cred.uid)) return Untrusted(socket, cred.uid);
  return absl::OkStatus();
}

absl::Status CheckDaemonPath(const std::string& socket, const std::set<uid_t>& trusted) {
  std::string dir =
      std::filesystem::absolute(std::filesystem::path(socket).parent_path()).lexically_normal();
  // Nobody untrusted can swap the socket: every directory (and symlink) on
  // the way is a trusted uid's, and writable by others only if sticky.
  // This is what makes the gRPC connection, made by gRPC from the path,
  // reach the same daemon as the probe below.
  absl::Status path = base::CheckTrustedPath(
      dir, trusted, "put the daemon's socket in a directory only it and root control");
  if (!path.ok()) {
    if (path.code() == absl::StatusCode::kNotFound) {
      return absl::UnavailableError(absl::StrCat("no structd at ", socket));
    }
    return absl::PermissionDeniedError(absl::StrCat(
        "socket ", socket, ": ", path.message(),
        "; another user may be impersonating the daemon, so no capability was sent (if the "
        "owner named runs the daemon, set STRUCTD_DAEMON_UID to its uid or "
        "ClientOptions::daemon_uid)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<base::UniqueFd> ConnectToDaemon(const std::string& socket,
                                               std::optional<uid_t> daemon_uid) {
  std::set<uid_t> trusted = TrustedDaemonUids(socket, daemon_uid);
  if (absl::Status s = CheckDaemonPath(socket, trusted); !s.ok()) return s;
  base::UniqueFd fd = base::ConnectUnix(socket);
  if (!fd) {
    return absl::UnavailableError(absl::StrCat("no structd at ", socket, ": ", strerror(errno)));
  }
  if (absl::Status s = CheckPeerIsDaemon(fd.get(), socket, trusted); !s.ok()) return s;
  return fd;
}

absl::Status VerifyDaemon(const std::string& socket, std::optional<uid_t> daemon_uid) {
  return ConnectToDaemon(socket, daemon_uid).status();
}

Connection::Connection(ClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  // Reconnect quickly once the daemon is back.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Our own subchannels: with gRPC's global pool, a new channel can inherit
  // a connection to a daemon that just died, still marked READY, and fail
  // its first call with "Broken pipe".
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // AllocateBatch replies carry up to 1,000,000 refs (about 9 MB).
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel("unix:" + options_.socket,
                                       grpc::InsecureChannelCredentials(), args);
  session_stub_ = v1::Session::NewStub(channel_);
  registry_ = v1::Registry::NewStub(channel_);
  instances_ = v1::Instances::NewStub(channel_);
}

absl::StatusOr<std::shared_ptr<Connection>> Connection::Open(ClientOptions options) {
  if (options.socket.empty()) options.socket = shm::DefaultSocketPath();
  if (options.name.empty()) {
    // The daemon accepts printable text only; a program name is usually
    // that, but need not be.
    options.name = program_invocation_short_name;
    for (char& ch : options.name) {
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F) ch = '?';
    }
  }
  std::shared_ptr<Connection> c(new Connection(options));
  auto deadline = std::chrono::system_clock::now() + options.connect_timeout;
  if (!SocketExists(options.socket) || !c->channel_->WaitForConnected(deadline)) {
    return absl::UnavailableError(absl::StrCat(
        "no structd at ", options.socket,
        ": start it with `structd --socket ", options.socket,
        "` (or deploy/scripts/run.sh), or set STRUCTD_SOCKET"));
  }
  if (absl::Status s = c->AttachOnce(options.connect_timeout); !s.ok()) return s;
  c->supervisor_ = std::thread([raw = c.get()] { raw->Supervise(); });
  return c;
}

Connection::~Connection() { Close(); }

void Connection::Close() {
  {
    base::MutexLock lock(&mu_);
    closing_ = true;
    base::MutexLock wlock(&write_mu_);
    if (stream_) stream_->WritesDone();
    if (attach_context_) attach_context_->TryCancel();
  }
  cv_.SignalAll();  // the supervisor's backoff and the heartbeats stop waiting
  if (supervisor_.joinable()) supervisor_.join();
}

absl::Status Connection::Prepare(grpc::ClientContext& context) const {
  base::MutexLock lock(&mu_);
  if (!lost_.empty()) return absl::FailedPreconditionError(lost_);
  if (session_id_.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "structd: not attached to the daemon at ", options_.socket,
        (closing_ ? " (the client was closed)"
                  : " (it is restarting or gone; the client re-attaches in the "
                    "background: retry later)")));
  }
  context.AddMetadata("structd-session", session_id_);
  context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
  return absl::OkStatus();
}

std::string Connection::session_id() const {
  base::MutexLock lock(&mu_);
  return session_id_;
}

bool Connection::closed() const {
  base::MutexLock lock(&mu_);
  return closing_;
}

bool Connection::attached() const {
  base::MutexLock lock(&mu_);
  return !session_id_.empty();
}

absl::Status Connection::session_status() const {
  base::MutexLock lock(&mu_);
  if (lost_.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(lost_);
}

void Connection::Track(std::weak_ptr<Channel> channel) {
  base::MutexLock lock(&mu_);
  std::erase_if(channels_, [](const std::weak_ptr<Channel>& c) { return c.expired(); });
  channels_.push_back(std::move(channel));
}

std::shared_ptr<Channel> Connection::FindChannel(const std::string& name_or_id) {
  base::MutexLock lock(&mu_);
  for (const auto& weak : channels_) {
    std::shared_ptr<Channel> c = weak.lock();
    if (c && (c->name() == name_or_id || c->id() == name_or_id)) return c;
  }
  return nullptr;
}

absl::StatusOr<base::UniqueFd> Connection::FetchArenaFile(const std::string& channel_id,
                                                          shm::ArenaFile file) const {
  std::shared_ptr<MemorySocket> memory;
  std::string session, secret;
  {
    base::MutexLock lock(&mu_);
    if (!lost_.empty()) return absl::FailedPreconditionError(lost_);
    if (session_id_.empty()) {
      return absl::UnavailableError(absl::StrCat(
          "not attached to structd at ", options_.socket, " (it restarts; retry shortly)"));
    }
    if (memory_ == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "structd at ", options_.socket,
          " names no memory socket (a daemon older than this client: upgrade it)"));
    }
    memory = memory_;
    session = session_id_;
    secret = resume_secret_;
  }
  return memory->Fetch(session, secret, channel_id, file);
}

absl::Status Connection::AttachOnce(std::chrono::milliseconds timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_wait_for_ready(false);
  if (!channel_->WaitForConnected(std::chrono::system_clock::now() + timeout)) {
    return absl::UnavailableError(absl::StrCat("no structd at ", options_.socket));
  }
  // Every (re)attach sends the session secret, and re-joins capabilities.
  if (absl::Status s = VerifyDaemon(options_.socket, ExpectedDaemonUid(options_.daemon_uid));
      !s.ok()) {
    return s;
  }
  std::unique_ptr<grpc::ClientReaderWriter<v1::AttachRequest, v1::AttachEvent>> stream;
  {
    base::MutexLock lock(&mu_);
    if (closing_) return absl::CancelledError("client closed");
    stream = session_stub_->Attach(context.get());
    attach_context_ = std::move(context);
  }
  v1::AttachRequest hello;
  // At most 128 bytes, cut at a UTF-8 character boundary.
  size_t cut = std::min<size_t>(options_.name.size(), 128);
  while (cut > 0 && cut < options_.name.size() &&
         (static_cast<unsigned char>(options_.name[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  hello.mutable_hello()->set_client_name(options_.name.substr(0, cut));
  {
    base::MutexLock lock(&mu_);
    if (!resume_id_.empty()) {
      hello.mutable_hello()->set_resume_session_id(resume_id_);
      hello.mutable_hello()->set_resume_secret(resume_secret_);
    }
  }
  v1::AttachEvent event;
  if (!stream->Write(hello) || !stream->Read(&event) || !event.has_attached()) {
    grpc::Status status = stream->Finish();
    base::MutexLock lock(&mu_);
    attach_context_.reset();
    if (status.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "structd at ", options_.socket, " ended the attach stream without a session"));
    }
    return FromGrpc(status);
  }
  base::MutexLock lock(&mu_);
  session_id_ = event.attached().session_id();
  resume_id_ = session_id_;
  resume_secret_ = event.attached().session_secret();
  lease_ms_ = std::max<uint32_t>(event.attached().lease_ms(), 300);
  const std::string& memory = event.attached().memory_socket();
  if (memory.empty()) {
    memory_.reset();
  } else if (memory_ == nullptr || memory_->path() != memory) {
    memory_ = std::make_shared<MemorySocket>(memory, ExpectedDaemonUid(options_.daemon_uid));
  }
  if (event.attached().max_refs_per_call() != 0) {
    max_refs_per_call_.store(event.attached().max_refs_per_call());
  }
  base::MutexLock wlock(&write_mu_);
  stream_ = std::move(stream);
  return absl::OkStatus();
}

void Connection::Heartbeats(std::chrono::milliseconds every) {
  mu_.Lock();
  while (true) {
    auto deadline = std::chrono::steady_clock::now() + every;
    while (!HeartbeatsShouldStop() && std::chrono::steady_clock::now() < deadline) {
      cv_.WaitFor(&mu_, deadline - std::chrono::steady_clock::now());
    }
    if (HeartbeatsShouldStop()) break;
    // The stream stays installed while session_id_ is set (Supervise
    // clears the id and joins this thread before resetting the stream).
    mu_.Unlock();
    {
      base::MutexLock wlock(&write_mu_);
      v1::AttachRequest beat;
      beat.mutable_heartbeat();
      if (stream_) stream_->Write(beat);
    }
    mu_.Lock();
  }
  mu_.Unlock();
}

void Connection::RejoinChannels() {
  std::vector<std::shared_ptr<Channel>> live;
  {
    base::MutexLock lock(&mu_);
    for (const auto& weak : channels_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  // A channel that cannot be joined again (the daemon lost it) keeps
  // failing its calls with the daemon's error; its mapped fields still work.
  for (const auto& c : live) (void)c->Rejoin();
}

void Connection::Supervise() {
  while (true) {
    std::chrono::milliseconds every;
    grpc::ClientReaderWriter<v1::AttachRequest, v1::AttachEvent>* stream;
    {
      base::MutexLock lock(&mu_);
      every = std::chrono::milliseconds(lease_ms_ / 3);
      stream = stream_.get();
    }
    std::thread heartbeats([this, every] { Heartbeats(every); });
    v1::AttachEvent event;
    while (stream->Read(&event)) {
      // `shutting_down`: the stream ends next; nothing to do before.
    }
    {
      base::MutexLock lock(&mu_);
      session_id_.clear();
    }
    cv_.SignalAll();  // Heartbeats stops
    heartbeats.join();
    {
      base::MutexLock lock(&mu_);
      base::MutexLock wlock(&write_mu_);
      (void)stream_->Finish();
      stream_.reset();
      attach_context_.reset();
    }
    auto backoff = std::chrono::milliseconds(50);
    while (true) {
      {
        base::MutexLock lock(&mu_);
        if (closing_ || !options_.reconnect) return;
        auto until = std::chrono::steady_clock::now() + backoff;
        while (!closing_ && std::chrono::steady_clock::now() < until) {
          cv_.WaitFor(&mu_, until - std::chrono::steady_clock::now());
        }
        if (closing_) return;
      }
      std::string previous;
      {
        base::MutexLock lock(&mu_);
        previous = resume_id_;
      }
      if (AttachOnce(std::chrono::milliseconds(1000)).ok()) {
        bool resumed;
        {
          base::MutexLock lock(&mu_);
          resumed = previous.empty() || session_id_ == previous;
          if (!resumed) {
            // The daemon ended the old session and released what it held;
            // every Owned of it may now name another process's instance.
            // Say so, end the new session, and stop.
            lost_ = absl::StrCat(
                "structd: session ", previous.substr(0, 8),
                " was ended by the daemon while this process could not be reached (its "
                "process looked gone, or the daemon restarted and could not resume it); "
                "the references it held were released, so its Owned objects and views may "
                "now name other processes' instances: stop using them and connect a new "
                "Client");
            session_lost_.store(true, std::memory_order_release);
            session_id_.clear();
          }
        }
        if (resumed) break;
        // End the new session in one critical section: Close() (the Client
        // going away) may run meanwhile, and a second WritesDone or Finish
        // on one stream is an error in gRPC.
        base::MutexLock lock(&mu_);
        base::MutexLock wlock(&write_mu_);
        if (attach_context_) attach_context_->TryCancel();
        if (stream_) (void)stream_->Finish();
        stream_.reset();  // Close() must not end it again
        attach_context_.reset();
        return;
      }
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
    reattaches_.fetch_add(1);
    RejoinChannels();
  }
}

}  // namespace structd::client::internal
