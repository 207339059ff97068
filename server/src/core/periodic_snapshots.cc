#include "core/periodic_snapshots.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/channel_restore.h"
#include "core/meta_store.h"
#include "core/private_dir.h"
#include "core/snapshot_emit.h"
#include "spdlog/spdlog.h"
#include "structd/base/new_directory.h"
#include "structd/base/posix.h"

namespace structd::server {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  if (size > max_bytes) return absl::DataLossError(absl::StrCat(path, " is too large"));
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) return absl::InternalError(absl::StrCat("reading ", path));
  return text.str();
}

// Feeds the files of snapshot directory `dir` to `restore`, 1 MiB at a time.
absl::Status FeedFiles(const std::string& dir, const SnapshotManifest& manifest,
                       ChannelRestore& restore) {
  std::string buffer(1 << 20, '\0');
  for (const SnapshotFileEntry& f : manifest.files) {
    const std::string path = absl::StrCat(dir, "/", f.name);
    base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      return absl::DataLossError(absl::StrCat(path, ": ", std::strerror(errno)));
    }
    for (uint64_t at = 0; at < f.bytes;) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), f.bytes - at));
      ssize_t n = pread(fd.get(), buffer.data(), want, static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::DataLossError(absl::StrCat(path, " is shorter than its manifest says"));
      if (absl::Status s = restore.Write(f.name, at, std::string_view(buffer.data(), n)); !s.ok()) {
        return s;
      }
      at += static_cast<uint64_t>(n);
    }
  }
  return absl::OkStatus();
}

}  // namespace

PeriodicSnapshots::PeriodicSnapshots(Core* core, PeriodicSnapshotOptions options)
    : core_(core), options_(std::move(options)) {
  options_.keep = std::max<uint32_t>(options_.keep, 1);
}

PeriodicSnapshots::~PeriodicSnapshots() { Stop(); }

std::string PeriodicSnapshots::SnapshotName(const std::string& channel, uint64_t unix_ms) {
  const time_t seconds = static_cast<time_t>(unix_ms / 1000);
  struct tm utc;
  gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &utc);
  return absl::StrFormat("%s@%s.%03dZ", channel, stamp, unix_ms % 1000);
}

bool PeriodicSnapshots::Chosen(const std::string& channel) const {
  for (const std::string& c : options_.channels) {
    if (c == "*" || c == channel) return true;
  }
  return false;
}

std::vector<std::string> PeriodicSnapshots::SnapshotsOf(const std::string& channel) const {
  std::vector<std::string> out;
  const std::string prefix = channel + "@";
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = e.path().filename().string();
    // Finished ones only: "NAME@STAMP" (a half-written one is NAME@STAMP.partial-PID).
    if (name.starts_with(prefix) && name.ends_with("Z") && e.is_directory(ec)) {
      out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());  // the stamps sort by time
  return out;
}

absl::Status PeriodicSnapshots::Start() {
  if (options_.dir.empty()) return absl::OkStatus();
  if (absl::Status s = MakePrivateDir(options_.dir); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot_dir '", options_.dir, "': ", s.message(),
        " (give a directory the daemon's user may create and write)"));
  }
  // A daemon killed while writing one left NAME@STAMP.partial-PID.
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.find('@') != std::string::npos && name.find(".partial-") != std::string::npos) {
      spdlog::warn("snapshots: removing {}, which a stopped daemon left half written",
                   e.path().string());
      fs::remove_all(e.path(), ec);
    }
  }
  RestoreMissing();
  thread_ = std::thread([this] { Run(); });
  spdlog::info("snapshots of {} every {} s into {}, keeping {} per channel",
               options_.channels.size() == 1 && options_.channels[0] == "*"
                   ? std::string("every channel")
                   : absl::StrCat("channels ", absl::StrJoin(options_.channels, ", ")),
               options_.interval.count(), options_.dir, options_.keep);
  return absl::OkStatus();
}

void PeriodicSnapshots::Stop() {
  {
    base::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) {
    thread_.join();
    SnapshotAll();  // the last round: a clean stop (a reboot's) loses nothing
  }
}

void PeriodicSnapshots::Run() {
  using Clock = std::chrono::steady_clock;
  for (auto next = Clock::now() + options_.interval;; next = Clock::now() + options_.interval) {
    {
      base::MutexLock lock(&mu_);
      while (!stopping_ && Clock::now() < next) wake_.WaitFor(&mu_, next - Clock::now());
      if (stopping_) return;
    }
    SnapshotAll();
  }
}

int PeriodicSnapshots::SnapshotAll() {
  int written = 0;
  for (const std::shared_ptr<Channel>& channel : core_->Channels()) {
    if (channel->dropped() || !Chosen(channel->name())) continue;
    const auto start = std::chrono::steady_clock::now();
    if (absl::Status s = SnapshotOne(*channel); !s.ok()) {
      spdlog::warn("snapshot of channel '{}' failed: {}", channel->name(), s.ToString());
      continue;
    }
    ++written;
    Prune(channel->name());
    spdlog::info("snapshot of channel '{}' written to {} in {} ms", channel->name(),
                 options_.dir,
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count());
  }
  return written;
}

absl::Status PeriodicSnapshots::SnapshotOne(Channel& channel) {
  absl::StatusOr<ChannelImage> image = channel.CaptureImage();
  if (!image.ok()) return image.status();
  absl::StatusOr<base::NewDirectory> dir = base::NewDirectory::Create(
      absl::StrCat(options_.dir, "/", SnapshotName(channel.name(), base::NowUnixMs())));
  if (!dir.ok()) return dir.status();
  absl::StatusOr<SnapshotManifest> manifest =
      EmitSnapshot(*image, options_.daemon_version, [&](const SnapshotPiece& piece) {
        return dir->Write(piece.file, piece.file_size, piece.offset, piece.data);
      });
  if (!manifest.ok()) return manifest.status();
  return dir->Finish();
}

void PeriodicSnapshots::Prune(const std::string& channel) {
  std::vector<std::string> all = SnapshotsOf(channel);
  std::error_code ec;
  for (size_t i = 0; i + options_.keep < all.size(); ++i) {
    fs::remove_all(fs::path(options_.dir) / all[i], ec);
    if (ec) spdlog::warn("snapshots: removing {}: {}", all[i], ec.message());
  }
}

absl::Status PeriodicSnapshots::RestoreFrom(const std::string& dir, const std::string& name) {
  absl::StatusOr<std::string> text =
      ReadSmallFile(dir + "/" + std::string(kSnapshotManifestFile), 16u << 20);
  if (!text.ok()) return text.status();
  absl::StatusOr<SnapshotManifest> manifest = ParseSnapshotManifest(*text);
  if (!manifest.ok()) return manifest.status();
  // The quota it counts against stays its creator's.
  const std::string meta_path = dir + "/" + std::string(kSnapshotMetaFile);
  absl::StatusOr<std::string> meta_text = ReadSmallFile(meta_path, kMaxSnapshotMetaBytes);
  if (!meta_text.ok()) return meta_text.status();
  absl::StatusOr<ChannelMeta> meta = ParseChannelMeta(*meta_text, meta_path);
  if (!meta.ok()) return meta.status();
  PeerCredentials daemon;
  daemon.known = true;
  daemon.pid = getpid();
  daemon.uid = meta->creator_uid >= 0 ? static_cast<uid_t>(meta->creator_uid) : getuid();
  absl::StatusOr<std::unique_ptr<ChannelRestore>> restore =
      core_->BeginRestore(daemon, *text, name);
  if (!restore.ok()) return restore.status();
  if (absl::Status s = FeedFiles(dir, *manifest, **restore); !s.ok()) return s;
  absl::StatusOr<RestoredChannel> done = core_->FinishRestore(std::move(*restore));
  if (!done.ok()) return done.status();
  const uint64_t now = base::NowUnixMs();
  spdlog::warn(
      "channel '{}' was not in the state directory (a reboot?): restored from {}, taken {} s "
      "ago ({} live instances; sessions of the time are not restored)",
      name, dir, now > manifest->taken_unix_ms ? (now - manifest->taken_unix_ms) / 1000 : 0,
      done->live_instances);
  return absl::OkStatus();
}

void PeriodicSnapshots::RestoreMissing() {
  // The channels with snapshots here: explicit names, or (with "*")
  // every NAME@... directory's NAME.
  std::vector<std::string> names;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = e.path().filename().string();
    const size_t at = name.find('@');
    if (at == std::string::npos || !name.ends_with("Z")) continue;
    const std::string channel = name.substr(0, at);
    if (Chosen(channel) && std::find(names.begin(), names.end(), channel) == names.end()) {
      names.push_back(channel);
    }
  }
  for (const std::string& name : names) {
    if (core_->Find(name).ok()) continue;  // the daemon kept it
    std::vector<std::string> all = SnapshotsOf(name);
    // Newest first; an unusable one (damaged) falls back to the one before.
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      const std::string dir = absl::StrCat(options_.dir, "/", *it);
      absl::Status s = RestoreFrom(dir, name);
      if (s.ok()) break;
      spdlog::error("restoring channel '{}' from {} failed: {}", name, dir, s.ToString());
      if (absl::IsAlreadyExists(s)) break;  // the name is taken: no snapshot would do
    }
  }
}

}  // namespace structd::server
