// Core: re-adopting the state directory after a restart (channels and
// session records) and releasing what sessions that never came back held.
// See doc/recovery.md.

#include <signal.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>

#include <toml++/toml.h>

#include "absl/strings/str_cat.h"
#include "core/core.h"
#include "spdlog/spdlog.h"

namespace structd::server {
namespace {

// The channel name in a meta.toml that may not parse: the first
// `name = "..."` line, if its value is a valid channel name.
std::string ChannelNameHint(const std::string& meta_path) {
  std::ifstream in(meta_path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("name = \"") && !line.starts_with("name = '")) continue;
    size_t end = line.find(line[7], 8);
    if (end == std::string::npos) return "";
    std::string name = line.substr(8, end - 8);
    return ValidateChannelName(name).ok() ? name : "";
  }
  return "";
}


}  // namespace

void Core::ForgetStrayDescriptors() {
  if (options_.descriptor_store == nullptr) return;
  for (auto& [name, fd] : options_.descriptor_store->TakeRest()) {
    // "arena.ID.…": kept while channels/ID exists (a channel that was not
    // recovered keeps its memory for the operator); forgotten otherwise.
    std::string id = name.starts_with("arena.") ? name.substr(6, name.find('.', 6) - 6) : "";
    std::error_code ec;
    bool owned = !id.empty() && id.find('/') == std::string::npos && id != "." && id != ".." &&
                 std::filesystem::exists(absl::StrCat(options_.state_dir, "/channels/", id), ec);
    if (owned) {
      spdlog::warn("recovery: descriptor '{}' of an unrecovered channel is kept in the store",
                   name);
    } else {
      spdlog::warn("recovery: descriptor '{}' belongs to no channel (one dropped or never "
                   "finished); removed from the store", name);
      options_.descriptor_store->Forget(name);
    }
  }
}

void Core::Recover() {
  std::error_code ec;
  size_t types = 0, roots = 0;
  uint64_t live = 0;
  std::set<std::string> ledger_sessions;
  std::set<std::string> unresumable;  // a ledger of theirs is damaged
  for (const auto& entry :
       std::filesystem::directory_iterator(options_.state_dir + "/channels", ec)) {
    const std::string dir = entry.path().string();
    if (!std::filesystem::exists(dir + "/meta.toml")) {
      // A channel whose creation did not finish.
      spdlog::warn("recovery: {} has no meta.toml; removing it", dir);
      std::filesystem::remove_all(dir, ec);
      continue;
    }
    absl::StatusOr<std::unique_ptr<Channel>> c =
        Channel::Restore(dir, options_.limits, options_.descriptor_store);
    if (!c.ok()) {
      UnrecoveredChannel u{dir, ChannelNameHint(dir + "/meta.toml"),
                           std::string(c.status().message())};
      spdlog::error(
          "recovery: channel '{}' in {} NOT recovered; its files are kept untouched and its "
          "name stays reserved (structctl status lists it): {}. Fix or restore the files, "
          "then restart the daemon; or stop the daemon and move the directory away to give "
          "up the channel.",
          u.name.empty() ? "?" : u.name, dir, u.reason);
      base::MutexLock lock(&mu_);
      unrecovered_.push_back(std::move(u));
      continue;
    }
    std::shared_ptr<Channel> channel = std::move(*c);
    Channel::RepairReport repaired = channel->Reconcile();
    events_.recovery_repairs.fetch_add(repaired.total() + channel->restore_repair_count(),
                                       std::memory_order_relaxed);
    if (repaired.total() > 0) {
      spdlog::warn(
          "recovery: channel '{}': repaired what an interrupted operation left: {} "
          "refcounts fixed, {} dangling references dropped, {} unreferenced instances freed, "
          "{} port moves finished or put back",
          channel->name(), repaired.refcounts_fixed, repaired.dangling_dropped,
          repaired.leaked_freed, repaired.port_moves_repaired);
    }
    if (channel->dropped()) {
      spdlog::info("recovery: channel '{}' was dropped; deleting it", channel->name());
      channel->Destroy();
      continue;
    }
    ChannelStats stats = channel->Stats();
    types += stats.types;
    roots += stats.roots;
    live += stats.alloc.live_instances;
    for (const std::string& s : channel->LedgerSessions()) ledger_sessions.insert(s);
    for (const std::string& s : channel->DamagedLedgerSessions()) unresumable.insert(s);
    base::MutexLock lock(&mu_);
    if (channel_ids_by_name_.count(channel->name())) {
      // Two directories claim one name (a backup restored next to the
      // channel that took the name meanwhile): keep the first, refuse
      // the second with the same care as a damaged one.
      UnrecoveredChannel u{dir, channel->name(),
                           absl::StrCat("another channel (id ", channel_ids_by_name_[channel->name()],
                                        ") already has this name")};
      spdlog::error("recovery: channel '{}' in {} NOT recovered: {}; its files are kept. "
                    "Move one of the two directories away and restart the daemon.",
                    u.name, dir, u.reason);
      unrecovered_.push_back(std::move(u));
      continue;
    }
    channel_ids_by_name_[channel->name()] = channel->id();
    ChargeQuota(channel);
    channels_by_id_[channel->id()] = std::move(channel);
  }
  ForgetStrayDescriptors();
  auto deadline = std::chrono::steady_clock::now() + options_.lease;
  base::MutexLock lock(&mu_);
  for (const auto& entry :
       std::filesystem::directory_iterator(options_.state_dir + "/sessions", ec)) {
    const std::string id = entry.path().filename().string();
    if (id.ends_with(".new")) {
      std::filesystem::remove(entry.path(), ec);
      continue;
    }
    Orphan o;
    o.deadline = deadline;
    try {
      toml::table t = toml::parse_file(entry.path().string());
      o.pid = static_cast<pid_t>(t["pid"].value_or(int64_t{0}));
      o.uid = static_cast<uid_t>(t["uid"].value_or(int64_t{0}));
      // Older daemons wrote the secret in clear ("secret").
      std::string hashed = t["secret_sha256"].value_or(std::string());
      std::string clear = t["secret"].value_or(std::string());
      if (std::optional<SecretDigest> d = SecretDigest::FromHex(hashed)) {
        o.secret = *d;
      } else if (!clear.empty()) {
        o.secret = SecretDigest::Of(clear);
      }
      o.client_name = t["client_name"].value_or(std::string());
    } catch (const toml::parse_error&) {
      o.pid = 0;  // unreadable: cannot resume; its ledgers are released
    }
    orphans_[id] = std::move(o);
  }
  for (const std::string& id : ledger_sessions) {
    if (!orphans_.count(id)) orphans_[id] = Orphan{0, 0, SecretDigest(), "", deadline};
  }
  for (const std::string& id : unresumable) {
    // What its damaged ledger held stays counted; the process, if it
    // comes back, gets a new session and learns that the old one is lost.
    auto it = orphans_.find(id);
    if (it != orphans_.end()) it->second.secret = SecretDigest();
  }
  if (!channels_by_id_.empty() || !orphans_.empty()) {
    spdlog::info(
        "recovery: {} channels ({} types, {} roots, {} live instances); {} sessions "
        "may resume within {} ms",
        channels_by_id_.size(), types, roots, live, orphans_.size(), options_.lease.count());
  }
}


uint64_t Core::ReapClaims() {
  std::vector<std::shared_ptr<Channel>> channels;
  {
    base::MutexLock lock(&mu_);
    for (const auto& [id, c] : channels_by_id_) channels.push_back(c);
  }
  uint64_t freed = 0;
  for (const auto& c : channels) freed += c->ReapClaims();
  return freed;
}

uint64_t Core::ReapOrphans() {
  std::vector<std::pair<std::string, Orphan>> gone;
  std::vector<std::shared_ptr<Channel>> channels;
  {
    base::MutexLock lock(&mu_);
    auto now = std::chrono::steady_clock::now();
    for (auto it = orphans_.begin(); it != orphans_.end();) {
      const Orphan& o = it->second;
      // No secret (an unreadable record): it can never resume. Pid 0: the
      // process lives in a pid namespace the daemon cannot see, so only the
      // lease can tell that it is gone.
      const bool exited = o.pid > 0 && kill(o.pid, 0) != 0 && errno == ESRCH;
      if (o.secret.empty() || exited || now > o.deadline) {
        gone.emplace_back(it->first, o);
        it = orphans_.erase(it);
      } else {
        ++it;
      }
    }
    if (gone.empty()) return 0;
    for (const auto& [id, c] : channels_by_id_) channels.push_back(c);
  }
  uint64_t released = 0;
  for (const auto& [id, o] : gone) {
    uint64_t mine = 0;
    for (const auto& c : channels) mine += c->Leave(id, SessionProcess{nullptr, o.pid});
    std::error_code ec;
    std::filesystem::remove(SessionPath(id), ec);
    spdlog::info("session {} (pid {}) did not resume after the restart: released {} references",
                 id.substr(0, 8), o.pid, mine);
    released += mine;
    events_.session_ends.fetch_add(1, std::memory_order_relaxed);
  }
  events_.released_after_exit.fetch_add(released, std::memory_order_relaxed);
  return released;
}


size_t Core::orphan_count() const {
  base::MutexLock lock(&mu_);
  return orphans_.size();
}


}  // namespace structd::server
