#ifndef STRUCTD_SERVER_CORE_META_STORE_H_
#define STRUCTD_SERVER_CORE_META_STORE_H_

// A channel's metadata on disk: a snapshot (meta.toml) plus an append-only
// journal (meta.journal) of the changes since, so that registering a type
// or setting a root costs one small append, not a rewrite of everything
// the channel holds. When the journal has grown past the snapshot (and past
// a floor), the store writes a new snapshot and starts an empty journal:
// each change costs O(1) amortized.
//
// Crash safety: a snapshot appears whole or not at all (temporary file +
// rename); a journal line is one write(2) with O_APPEND, and a torn last
// line (no newline) is ignored when the journal is read. Every record is
// idempotent (set a root, delete a root, add a type with its token, seal,
// drop), so a crash between writing a new snapshot and emptying the
// journal replays records that are already in the snapshot, harmlessly.
//
// The files are the daemon's own; they are still validated when read
// (DataLoss naming the file and the line).
//
// Thread safety: none; the owning channel's lock serializes calls.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/secret_digest.h"
#include "structd/shm/arena.h"
#include "structd/shm/ref.h"
#include "structd/shm/type_token.h"

namespace structd::server {

// Everything a channel's metadata holds.
struct ChannelMeta {
  struct Type {
    std::string key;
    shm::TypeToken token;
    uint32_t type_index = 0;
    std::vector<std::string> fields;  // "name:type", in order
  };
  std::string id;
  std::string name;
  // Digests only (secret_digest.h): meta.toml names no capability.
  SecretDigest owner_capability;
  SecretDigest member_capability;
  uint64_t created_unix_ms = 0;
  // The uid whose quota the arena counts against (an older daemon's
  // channels: -1, counted as the daemon's own).
  int64_t creator_uid = -1;
  bool sealed = false;
  bool dropped = false;
  shm::ArenaIdentity arena;  // zero fields: written by an older daemon
  // The arena is sealed memfds kept in the daemon's descriptor store, not
  // files in arena/ (fixed at creation).
  bool arena_memfd = false;
  std::vector<Type> types;   // in registration order
  std::map<std::string, shm::Ref> roots;
};

// meta.toml's text for `meta` (what a snapshot of the store writes), and
// back. ParseChannelMeta: DataLoss naming `path` for damaged text;
// `legacy_clear_text` (may be null) is set when it holds capabilities in
// clear (written by an older daemon).
std::string RenderChannelMeta(const ChannelMeta& meta);
absl::StatusOr<ChannelMeta> ParseChannelMeta(std::string_view text, const std::string& path,
                                             bool* legacy_clear_text = nullptr);

class MetaStore {
 public:
  // Writes the first snapshot of a new channel in `dir`.
  static absl::StatusOr<std::unique_ptr<MetaStore>> Create(const std::string& dir,
                                                           const ChannelMeta& meta);
  // Reads the snapshot and replays the journal. NotFound if there is no
  // meta.toml; DataLoss naming the file (and line) if it is damaged.
  static absl::StatusOr<std::unique_ptr<MetaStore>> Open(const std::string& dir);

  const ChannelMeta& meta() const { return meta_; }

  // Each records one change (one journal line) and applies it to meta().
  // ResourceExhausted if the file system is full; nothing changes then.
  absl::Status AddType(const ChannelMeta::Type& type);
  absl::Status SetRoot(const std::string& name, shm::Ref ref);
  absl::Status DeleteRoot(const std::string& name);
  absl::Status Seal();
  absl::Status MarkDropped();
  // Records the arena's identity (written by Create, and by an older
  // channel's first Open, so later restarts can repair its header).
  absl::Status SetArena(const shm::ArenaIdentity& arena);

  // Writes a snapshot of meta() and starts an empty journal.
  absl::Status Compact();
  uint64_t journal_records() const { return journal_records_; }

 private:
  explicit MetaStore(std::string dir) : dir_(std::move(dir)) {}
  // Appends `line` (one record, without the newline).
  absl::Status Append(const std::string& line);
  // Compacts if the journal outgrew the snapshot. REQUIRES: meta_ already
  // holds every appended record.
  void MaybeCompact();
  std::string SnapshotPath() const { return dir_ + "/meta.toml"; }
  std::string JournalPath() const { return dir_ + "/meta.journal"; }

  const std::string dir_;
  ChannelMeta meta_;
  uint64_t snapshot_bytes_ = 0;
  uint64_t journal_bytes_ = 0;
  uint64_t journal_records_ = 0;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_META_STORE_H_
