#include "core/core.h"

#include <signal.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>

#include <cerrno>
#include <filesystem>
#include <sstream>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/private_dir.h"
#include "core/random.h"
#include "spdlog/spdlog.h"
#include "structd/base/posix.h"

namespace structd::server {
namespace {

absl::Status UnknownChannel(const std::string& channel) {
  return absl::NotFoundError(absl::StrCat(
      "channel '", channel,
      "': no such channel (create it with CreateChannel, or check the "
      "name)"));
}

}  // namespace

bool IsPrintableUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    uint32_t cp;
    size_t n;
    if (c < 0x80) {
      cp = c;
      n = 1;
    } else if ((c & 0xE0) == 0xC0) {
      cp = c & 0x1F;
      n = 2;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F;
      n = 3;
    } else if ((c & 0xF8) == 0xF0) {
      cp = c & 0x07;
      n = 4;
    } else {
      return false;
    }
    if (i + n > text.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) return false;  // controls
    if (cp == 0x2028 || cp == 0x2029) return false;  // line separators
    i += n;
  }
  return true;
}

namespace {

// max_bytes_total = 0: half of where new arenas live: the file system
// under the state directory, or, for sealed memfds (shmem, on no file
// system), the machine's memory.
CoreOptions ResolveQuotas(CoreOptions o) {
  if (o.quotas.max_bytes_total == 0) {
    struct statvfs fs;
    struct sysinfo mem;
    if (o.arena_memfd) {
      if (sysinfo(&mem) == 0) o.quotas.max_bytes_total = uint64_t{mem.totalram} * mem.mem_unit / 2;
    } else if (statvfs(o.state_dir.c_str(), &fs) == 0) {
      o.quotas.max_bytes_total = uint64_t{fs.f_blocks} * fs.f_frsize / 2;
    }
    if (o.quotas.max_bytes_total == 0) o.quotas.max_bytes_total = UINT64_MAX;
  }
  return o;
}

}  // namespace

Core::Core(CoreOptions options)
    : options_(ResolveQuotas(std::move(options))),
      instance_id_(RandomU64()),
      quota_(options_.quotas) {}

void Core::ChargeQuota(const std::shared_ptr<Channel>& channel) {
  quota_.AdoptChannel(channel->id(), channel->name(), channel->creator_uid(),
                      channel->arena_bytes(), channel->arena_descriptor_files());
  std::string id = channel->id();
  channel->SetGrowthGate({[this, id](uint64_t bytes) { return quota_.Grow(id, bytes); },
                          [this, id](uint64_t bytes) { quota_.CancelGrow(id, bytes); }});
}

Core::~Core() = default;

absl::StatusOr<std::unique_ptr<Core>> Core::Open(CoreOptions options) {
  for (const std::string& dir : {options.state_dir, options.state_dir + "/channels",
                                 options.state_dir + "/sessions"}) {
    if (absl::Status s = MakePrivateDir(dir); !s.ok()) {
      return absl::PermissionDeniedError(
          absl::StrCat("state dir ", options.state_dir, ": ", s.message()));
    }
  }
  std::unique_ptr<Core> core(new Core(std::move(options)));
  core->Recover();
  core->WriteAdminCapability();
  return core;
}

void Core::WriteAdminCapability() {
  std::string capability = RandomHex128();
  std::string path = options_.state_dir + "/admin.capability";
  if (absl::Status s = base::WriteFileAtomically(path, capability); !s.ok()) {
    spdlog::warn("{}: only root may use the Admin service", s.ToString());
    return;
  }
  admin_capability_ = SecretDigest::Of(capability);
}

absl::Status Core::AuthorizeAdmin(const PeerCredentials& peer,
                                  std::string_view presented_capability) const {
  if (peer.known && peer.uid == 0) return absl::OkStatus();
  if (admin_capability_.Matches(presented_capability)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrFormat(
      "admin: %s; only root or a caller presenting the admin capability may call the "
      "Admin service (structctl reads it from %s/admin.capability, which only the "
      "daemon's user (uid %d) can read; or pass --admin-capability / "
      "STRUCTD_ADMIN_CAPABILITY)",
      presented_capability.empty() ? "no admin capability presented"
                                   : "wrong admin capability (it changes at every daemon start)",
      options_.state_dir, getuid()));
}

Core::Totals Core::GetTotals() const {
  Totals t;
  std::vector<std::shared_ptr<Channel>> channels = Channels();
  for (const auto& c : channels) {
    ChannelStats st = c->Stats();
    t.live_instances += st.alloc.live_instances;
    t.arena_bytes += st.alloc.extent_bytes;
  }
  t.channels = static_cast<uint32_t>(channels.size());
  base::MutexLock lock(&mu_);
  t.sessions = static_cast<uint32_t>(sessions_.size());
  return t;
}

std::string Core::SessionPath(const std::string& id) const {
  return absl::StrCat(options_.state_dir, "/sessions/", id);
}

// A session record (state/sessions/ID, 0600): what a restarted daemon
// needs to let the same process resume the session.
void Core::SaveSession(const SessionInfo& info, const SecretDigest& secret) const {
  toml::table t{{"pid", static_cast<int64_t>(info.pid)},
                {"uid", static_cast<int64_t>(info.uid)},
                {"secret_sha256", secret.ToHex()},
                {"client_name", info.client_name}};
  std::ostringstream text;
  text << t << "\n";
  if (absl::Status s = base::WriteFileAtomically(SessionPath(info.id), text.str()); !s.ok()) {
    spdlog::warn("session {}: {}: it will not survive a daemon restart", info.id.substr(0, 8),
                 s.ToString());
  }
}

absl::StatusOr<SessionInfo> Core::Attach(const PeerCredentials& peer,
                                         const std::string& client_name,
                                         const std::string& resume_id,
                                         const std::string& resume_secret) {
  if (!peer.known) {
    return absl::UnauthenticatedError(
        "attach: the daemon cannot identify the calling process (connect "
        "over the daemon's Unix socket)");
  }
  // A pidfd that cannot tell its process from others (pid invisible, and
  // a kernel before pidfs identities) binds nothing: the session would
  // refuse its own process's calls. Treated as unbound.
  if (peer.process != nullptr && !peer.process->Identifiable()) {
    PeerCredentials unbound = peer;
    unbound.process = nullptr;
    return Attach(unbound, client_name, resume_id, resume_secret);
  }
  if (peer.process == nullptr && !options_.allow_unbound_peers) {
    spdlog::warn(
        "attach refused: pid {} uid {}: the kernel gives no pidfd for this process (its pid "
        "is not visible in the daemon's pid namespace, and the kernel predates "
        "SO_PEERPIDFD), so the daemon could tell neither its death nor its identity; run "
        "the daemon in the clients' pid namespace, or set allow_unbound_peers = true",
        peer.pid, peer.uid);
    return absl::PermissionDeniedError(
        "attach: the daemon cannot bind this process (no pidfd: its pid is invisible to "
        "the daemon and the kernel has no SO_PEERPIDFD); run the daemon in the host's pid "
        "namespace, or have the operator set allow_unbound_peers = true");
  }
  if (client_name.size() > 128) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "attach: client_name is %d characters, more than 128 (shorten it)",
        client_name.size()));
  }
  if (!IsPrintableUtf8(client_name)) {
    // It goes into the log and `structctl sessions` as it is.
    return absl::InvalidArgumentError(
        "attach: client_name must be printable UTF-8 text: no control characters, "
        "newlines or escape sequences (name the program, e.g. \"pricer\")");
  }
  base::MutexLock lock(&mu_);
  if (sessions_.size() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "attach: %d sessions already (raise max_sessions in the daemon's "
        "config, or end idle clients)",
        sessions_.size()));
  }
  uint32_t of_process = 0, of_uid = 0;
  for (const auto& [id, other] : sessions_) {
    if (other.info.uid == peer.uid) ++of_uid;
    if (other.info.pid == peer.pid && other.info.uid == peer.uid) ++of_process;
  }
  if (peer.pid > 0 && of_process >= options_.max_sessions_per_process) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "attach: pid %d already has %d sessions, the most one process may have (use one "
        "Client per process, or raise max_sessions_per_process)",
        peer.pid, of_process));
  }
  if (of_uid >= options_.max_sessions_per_uid) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "attach: uid %d already has %d sessions, the most one uid may have (end idle "
        "clients, or raise max_sessions_per_uid)",
        peer.uid, of_uid));
  }
  Session s;
  auto orphan = orphans_.find(resume_id);
  bool resumed = false;
  if (orphan != orphans_.end() && orphan->second.secret.Matches(resume_secret) &&
      orphan->second.pid == peer.pid && orphan->second.uid == peer.uid) {
    s.info.id = resume_id;
    s.info.secret = resume_secret;
    for (const auto& [id, channel] : channels_by_id_) {
      if (channel->HasSession(resume_id)) s.joined.insert(id);
    }
    orphans_.erase(orphan);
    resumed = true;
  } else {
    s.info.id = RandomHex128();
    s.info.secret = RandomHex128();
  }
  s.info.client_name = client_name;
  s.info.pid = peer.pid;
  s.info.uid = peer.uid;
  s.info.attached_unix_ms = base::NowUnixMs();
  s.last_heartbeat = std::chrono::steady_clock::now();
  s.process = peer.process;
  s.connection = peer.connection;
  SessionInfo info = s.info;
  SecretDigest secret = SecretDigest::Of(info.secret);
  s.info.secret.clear();  // the caller gets it once; the daemon keeps a digest
  s.secret = secret;
  sessions_[info.id] = std::move(s);
  spdlog::info("session {} {}: pid {} uid {} name '{}'", info.id.substr(0, 8),
               resumed ? "resumed after a daemon restart" : "attached", info.pid, info.uid,
               client_name);
  if (info.pid == 0) {
    spdlog::warn(
        "session {}: the client's pid is not visible in the daemon's pid namespace; "
        "if the daemon restarts, its references are kept until the lease ({} ms) runs "
        "out even when it is gone (run the daemon in the host's pid namespace)",
        info.id.substr(0, 8), options_.lease.count());
  }
  SaveSession(info, secret);
  events_.attaches.fetch_add(1, std::memory_order_relaxed);
  return info;
}

void Core::Heartbeat(const std::string& session_id) {
  base::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  if (it != sessions_.end()) {
    it->second.last_heartbeat = std::chrono::steady_clock::now();
    if (it->second.lease_warned) {
      it->second.lease_warned = false;
      spdlog::info("session {} (pid {}) is heard from again", session_id.substr(0, 8),
                   it->second.info.pid);
    }
  }
}

uint64_t Core::Detach(const std::string& session_id) {
  std::vector<std::shared_ptr<Channel>> joined;
  SessionInfo info;
  SessionProcess process;
  {
    base::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return 0;
    info = it->second.info;
    process = {it->second.process, it->second.info.pid};
    for (const std::string& id : it->second.joined) {
      auto c = channels_by_id_.find(id);
      if (c != channels_by_id_.end()) joined.push_back(c->second);
    }
    sessions_.erase(it);
  }
  uint64_t released = 0;
  for (const auto& channel : joined) released += channel->Leave(session_id, process);
  std::error_code ec;
  std::filesystem::remove(SessionPath(session_id), ec);
  std::vector<std::shared_ptr<Channel>> gone;
  {
    base::MutexLock lock(&mu_);
    for (const auto& channel : joined) {
      if (auto g = TakeIfUnusedLocked(channel)) gone.push_back(std::move(g));
    }
  }
  for (const auto& channel : gone) DestroyChannel(channel);
  events_.session_ends.fetch_add(1, std::memory_order_relaxed);
  if (process.Exited()) {
    events_.released_after_exit.fetch_add(released, std::memory_order_relaxed);
  } else if (released > 0) {
    // The connection closes before the kernel reports the process exited
    // (its descriptors are closed first): decide later (CountExits).
    base::MutexLock lock(&mu_);
    if (pending_exits_.size() >= kMaxPendingExits) pending_exits_.erase(pending_exits_.begin());
    pending_exits_.push_back({process, released, std::chrono::steady_clock::now()});
  }
  spdlog::info("session {} ended (pid {}): released {} references in {} "
               "channels",
               session_id.substr(0, 8), info.pid, released, joined.size());
  return released;
}

std::vector<std::string> Core::ExpiredSessions() {
  base::MutexLock lock(&mu_);
  std::vector<std::string> out;
  auto now = std::chrono::steady_clock::now();
  for (auto& [id, s] : sessions_) {
    if (now - s.last_heartbeat <= options_.lease) continue;
    if (s.process != nullptr && !s.process->Exited()) {
      if (!s.lease_warned) {
        s.lease_warned = true;
        spdlog::warn("session {} (pid {}) missed its lease of {} ms but its process is "
                     "alive (stopped, or in a debugger?): keeping the session and "
                     "everything it holds",
                     id.substr(0, 8), s.info.pid, options_.lease.count());
      }
      continue;
    }
    out.push_back(id);
  }
  events_.lease_expiries.fetch_add(out.size(), std::memory_order_relaxed);
  return out;
}

std::vector<UnrecoveredChannel> Core::Unrecovered() const {
  base::MutexLock lock(&mu_);
  return unrecovered_;
}

absl::Status Core::CheckSession(const std::string& session_id,
                                const PeerCredentials& peer) const {
  if (session_id.empty()) {
    return absl::UnauthenticatedError(
        "session: missing (attach first and send the session id in the "
        "'structd-session' metadata)");
  }
  base::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) {
    return absl::UnauthenticatedError(
        "session: unknown or ended (attach again; after a daemon restart, "
        "re-attach and re-join)");
  }
  if (!peer.known) {
    return absl::PermissionDeniedError(
        "session: the caller's process credentials are unknown (connect "
        "over the daemon's Unix socket)");
  }
  const Session& s = it->second;
  auto not_yours = [&] {
    return absl::PermissionDeniedError(absl::StrFormat(
        "session: belongs to another process (pid %d), not to the caller (pid %d); each "
        "process attaches for itself",
        s.info.pid, peer.pid));
  };
  if (peer.uid != s.info.uid) return not_yours();
  if (s.process == nullptr) {
    // Allowed unbound (allow_unbound_peers): only its own connection.
    if (peer.connection == 0 || peer.connection != s.connection) {
      return absl::PermissionDeniedError(
          "session: it is bound to the connection that attached (the daemon cannot see "
          "the process: allow_unbound_peers), and this call came over another one (a "
          "process uses its own session, over its own connection)");
    }
    return absl::OkStatus();
  }
  if (peer.process != nullptr) {
    // Both pidfds: the kernel's identity decides (a pid may be reused by
    // the time a session's stream has ended).
    return s.process->SameProcess(*peer.process) ? absl::OkStatus() : not_yours();
  }
  if (s.info.pid > 0 && peer.pid == s.info.pid && !s.process->Exited()) {
    // The session's process is alive, so its pid names no other process.
    return absl::OkStatus();
  }
  return not_yours();
}

absl::StatusOr<std::shared_ptr<Channel>> Core::AuthorizeMemory(
    const std::string& session_id, std::string_view secret, const PeerCredentials& peer,
    const std::string& channel) const {
  absl::Status bound = CheckSession(session_id, peer);
  if (!bound.ok()) {
    base::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    bool unbound_with_secret = it != sessions_.end() && it->second.process == nullptr &&
                               it->second.secret.Matches(secret);
    if (!unbound_with_secret) return bound;
  }
  return Joined(session_id, channel);
}

std::vector<SessionInfo> Core::Sessions() const {
  std::vector<std::pair<SessionInfo, std::vector<std::shared_ptr<Channel>>>>
      snapshot;
  {
    base::MutexLock lock(&mu_);
    for (const auto& [id, s] : sessions_) {
      std::vector<std::shared_ptr<Channel>> chans;
      for (const std::string& cid : s.joined) {
        auto c = channels_by_id_.find(cid);
        if (c != channels_by_id_.end()) chans.push_back(c->second);
      }
      snapshot.emplace_back(s.info, std::move(chans));
    }
  }
  std::vector<SessionInfo> out;
  for (auto& [info, chans] : snapshot) {
    for (const auto& c : chans) {
      info.channels.push_back(c->name());
      info.refs_held += c->RefsHeld(info.id);
    }
    out.push_back(std::move(info));
  }
  return out;
}

void Core::CountExits() {
  base::MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(pending_exits_, [&](const PendingExit& p) {
    if (p.process.Exited()) {
      events_.released_after_exit.fetch_add(p.released, std::memory_order_relaxed);
      return true;
    }
    return now - p.ended > kPendingExitWindow;  // alive: it closed its connection
  });
}

absl::StatusOr<std::string> Core::ReserveChannelNameLocked(const std::string& name,
                                                           const char* if_taken,
                                                           const char* other_name) {
  if (channel_ids_by_name_.count(name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("channel '", name, "': already exists (", if_taken, ")"));
  }
  for (const UnrecoveredChannel& u : unrecovered_) {
    if (u.name == name) {
      return absl::AlreadyExistsError(absl::StrCat(
          "channel '", name, "': the name belongs to a channel the daemon could not "
          "recover at start-up (", u.dir, ": ", u.reason,
          "); repair it and restart the daemon, or ", other_name));
    }
  }
  if (channels_by_id_.size() >= options_.max_channels) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': the daemon already has %d channels (drop unused "
        "ones, or raise max_channels)",
        name, channels_by_id_.size()));
  }
  std::string id;
  do {
    id = absl::StrFormat("%016x", RandomU64());
  } while (channels_by_id_.count(id));
  channel_ids_by_name_[name] = id;
  return id;
}

absl::StatusOr<ChannelCreated> Core::CreateChannel(
    const std::string& session_id, const std::string& name,
    uint64_t extent_size, uint32_t max_extents) {
  if (absl::Status s = ValidateChannelName(name); !s.ok()) return s;
  Channel::Options o;
  o.name = name;
  o.arena = options_.arena;
  o.arena.initial_extents = 1;
  if (extent_size > options_.arena.extent_size || max_extents > options_.arena.max_extents) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': asks for %d extents of %d bytes; this daemon allows at most %d extents "
        "of %d bytes (quotas extent_size and max_extents: ask for less, or 0 for the "
        "defaults, or ask the operator to raise them)",
        name, max_extents, extent_size, options_.arena.max_extents, options_.arena.extent_size));
  }
  if (extent_size != 0) o.arena.extent_size = extent_size;
  if (max_extents != 0) o.arena.max_extents = max_extents;
  o.limits = options_.limits;
  std::shared_ptr<Channel> channel;
  {
    base::MutexLock lock(&mu_);
    if (sessions_.count(session_id) == 0) {
      return absl::UnauthenticatedError("session: unknown or ended (attach again)");
    }
    absl::StatusOr<std::string> id =
        ReserveChannelNameLocked(name, "join it, or pick another name", "pick another name");
    if (!id.ok()) return id.status();
    o.id = *id;
    o.creator_uid = sessions_.at(session_id).info.uid;
    o.dir = absl::StrCat(options_.state_dir, "/channels/", o.id);
    if (options_.arena_memfd) o.memfd_store = options_.descriptor_store;
    // Creating the arena takes time (backing the first extent); the name is
    // reserved meanwhile (above) so a concurrent create of the same name
    // fails.
  }
  // Arena and ledger files are created outside mu_ (the lock rule above).
  absl::Status charged = quota_.AddChannel(
      o.id, name, o.creator_uid, o.arena.extent_size * o.arena.initial_extents,
      o.memfd_store != nullptr ? 1 + o.arena.initial_extents : 0);
  Channel::IssuedCapabilities issued;
  absl::StatusOr<std::unique_ptr<Channel>> created =
      charged.ok() ? Channel::Create(o, &issued) : charged;
  if (!created.ok()) {
    if (charged.ok()) quota_.RemoveChannel(o.id);
    base::MutexLock lock(&mu_);
    channel_ids_by_name_.erase(name);
    return created.status();
  }
  channel = std::move(*created);
  ChargeQuota(channel);
  absl::Status joined = channel->Join(session_id);  // the creator, as owner
  ChannelCreated out{o.id, std::move(issued.owner), std::move(issued.member),
                     channel->arena_summary()};
  bool session_gone = false;
  {
    base::MutexLock lock(&mu_);
    channels_by_id_[o.id] = channel;
    auto s = sessions_.find(session_id);
    if (s == sessions_.end()) {
      session_gone = true;
    } else if (joined.ok()) {
      s->second.joined.insert(o.id);
    }
  }
  if (session_gone) channel->Leave(session_id);  // ended while we created
  if (!joined.ok()) {
    spdlog::error("channel '{}': its creator could not join it: {}", name, joined.ToString());
  }
  spdlog::info("channel '{}' created (id {}, extents of {} bytes, at most {})",
               name, o.id, o.arena.extent_size, o.arena.max_extents);
  return out;
}

absl::StatusOr<std::shared_ptr<Channel>> Core::FindLocked(
    const std::string& channel) const {
  auto by_id = channels_by_id_.find(channel);
  if (by_id != channels_by_id_.end() && !by_id->second->dropped()) {
    return by_id->second;
  }
  auto by_name = channel_ids_by_name_.find(channel);
  if (by_name != channel_ids_by_name_.end()) {
    auto c = channels_by_id_.find(by_name->second);
    if (c != channels_by_id_.end() && !c->second->dropped()) return c->second;
  }
  return UnknownChannel(channel);
}

absl::StatusOr<std::shared_ptr<Channel>> Core::Find(
    const std::string& channel) const {
  base::MutexLock lock(&mu_);
  return FindLocked(channel);
}

absl::StatusOr<ChannelJoined> Core::JoinChannel(const std::string& session_id,
                                                const std::string& channel,
                                                const std::string& capability) {
  std::shared_ptr<Channel> c;
  {
    base::MutexLock lock(&mu_);
    if (sessions_.count(session_id) == 0) {
      return absl::UnauthenticatedError("session: unknown or ended (attach again)");
    }
    absl::StatusOr<std::shared_ptr<Channel>> found = FindLocked(channel);
    if (!found.ok()) return found.status();
    c = *found;
  }
  absl::StatusOr<Role> role = c->CheckCapability(capability);
  if (!role.ok()) {
    spdlog::debug("join '{}' refused: wrong capability", channel);
    return role.status();
  }
  if (absl::Status s = c->Join(session_id); !s.ok()) return s;
  {
    base::MutexLock lock(&mu_);
    auto s = sessions_.find(session_id);
    if (s == sessions_.end()) {
      c->Leave(session_id);
      return absl::UnauthenticatedError("session: ended while joining");
    }
    s->second.joined.insert(c->id());
  }
  return ChannelJoined{c->id(), c->name(), *role, c->arena_summary()};
}

absl::Status Core::DropChannel(const std::string& channel,
                               const std::string& owner_capability) {
  absl::StatusOr<std::shared_ptr<Channel>> c = OwnedChannel(channel, owner_capability);
  if (!c.ok()) return c.status();
  Drop(*c, "by its owner");
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> Core::DropChannelAsAdmin(const std::string& channel) {
  absl::StatusOr<std::shared_ptr<Channel>> c = Find(channel);
  if (!c.ok()) return c.status();
  return Drop(*c, "by an operator");
}

size_t Core::RestoreFileSizes() {
  size_t repaired = 0;
  for (const std::shared_ptr<Channel>& c : Channels()) repaired += c->RestoreFileSizes();
  return repaired;
}

size_t Core::DropIdleChannels() {
  if (options_.drop_idle_channels_after.count() <= 0) return 0;
  size_t dropped = 0;
  for (const std::shared_ptr<Channel>& c : Channels()) {
    if (!c->MarkDroppedIfUnusedFor(options_.drop_idle_channels_after)) continue;
    FinishDrop(c, "after no session joined it for drop_idle_channels_after_s");
    ++dropped;
  }
  return dropped;
}

uint32_t Core::Drop(const std::shared_ptr<Channel>& channel, const char* by) {
  channel->MarkDropped();  // records the drop: file work, outside mu_
  return FinishDrop(channel, by);
}

uint32_t Core::FinishDrop(const std::shared_ptr<Channel>& channel, const char* by) {
  std::shared_ptr<Channel> gone;
  {
    base::MutexLock lock(&mu_);
    channel_ids_by_name_.erase(channel->name());
    gone = TakeIfUnusedLocked(channel);
  }
  uint32_t sessions = gone ? 0 : channel->session_count();
  spdlog::info("channel '{}' dropped {}; its arena goes when its {} sessions leave",
               channel->name(), by, sessions);
  if (gone) DestroyChannel(gone);
  return sessions;
}

std::shared_ptr<Channel> Core::TakeIfUnusedLocked(const std::shared_ptr<Channel>& channel) {
  if (!channel->dropped()) return nullptr;
  for (const auto& [id, s] : sessions_) {
    if (s.joined.count(channel->id()) && channel->HasSession(id)) return nullptr;
  }
  if (channel->session_count() != 0) return nullptr;
  if (channels_by_id_.erase(channel->id()) == 0) return nullptr;  // taken already
  return channel;
}

void Core::DestroyChannel(const std::shared_ptr<Channel>& channel) {
  channel->Destroy();
  quota_.RemoveChannel(channel->id());
  spdlog::info("channel '{}' (id {}) destroyed: arena deleted", channel->name(),
               channel->id());
}

absl::StatusOr<std::shared_ptr<Channel>> Core::Joined(
    const std::string& session_id, const std::string& channel) const {
  base::MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<Channel>> c = FindLocked(channel);
  if (!c.ok()) return c.status();
  auto s = sessions_.find(session_id);
  if (s == sessions_.end() || !s->second.joined.count((*c)->id())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "channel '", channel,
        "': this session has not joined it (call JoinChannel with a "
        "capability first)"));
  }
  return *c;
}

absl::StatusOr<std::shared_ptr<Channel>> Core::OwnedChannel(
    const std::string& channel, const std::string& owner_capability) const {
  absl::StatusOr<std::shared_ptr<Channel>> c = Find(channel);
  if (!c.ok()) return c.status();
  absl::StatusOr<Role> role = (*c)->CheckCapability(owner_capability);
  if (!role.ok() || *role != Role::kOwner) {
    return absl::PermissionDeniedError(absl::StrCat(
        "channel '", channel,
        "': this needs the owner capability (the member capability or a "
        "wrong value is not enough)"));
  }
  return *c;
}

std::vector<std::shared_ptr<Channel>> Core::Channels() const {
  base::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Channel>> out;
  for (const auto& [id, c] : channels_by_id_) out.push_back(c);
  return out;
}

}  // namespace structd::server
