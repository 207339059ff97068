#include "core/meta_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/base/posix.h"
#include "spdlog/spdlog.h"

namespace structd::server {
namespace {

// The journal is compacted once it has this many records and more bytes
// than the snapshot: compaction costs O(snapshot) and happens at most once
// per snapshot's worth of appends, so each change is O(1) amortized.
constexpr uint64_t kCompactAfterRecords = 1024;

std::optional<uint64_t> ParseHex64(const std::string& text) {
  if (text.empty() || text.size() > 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return std::nullopt;
    v = v * 16 + static_cast<uint64_t>(d);
  }
  return v;
}




toml::array Fields(const std::vector<std::string>& fields) {
  toml::array out;
  for (const std::string& f : fields) out.push_back(f);
  return out;
}

std::string Snapshot(const ChannelMeta& m) {
  toml::table meta;
  meta.insert("format", 1);
  meta.insert("id", m.id);
  meta.insert("name", m.name);
  meta.insert("created_unix_ms", static_cast<int64_t>(m.created_unix_ms));
  meta.insert("creator_uid", m.creator_uid);
  meta.insert("owner_capability_sha256", m.owner_capability.ToHex());
  meta.insert("member_capability_sha256", m.member_capability.ToHex());
  meta.insert("sealed", m.sealed);
  meta.insert("dropped", m.dropped);
  if (m.arena_memfd) meta.insert("arena_backing", "memfd");
  if (m.arena.epoch != 0) {
    meta.insert("arena_epoch", absl::StrFormat("%016x", m.arena.epoch));
    meta.insert("arena_extent_size", static_cast<int64_t>(m.arena.extent_size));
    meta.insert("arena_max_extents", static_cast<int64_t>(m.arena.max_extents));
  }
  toml::array types;
  for (const ChannelMeta::Type& t : m.types) {
    types.push_back(toml::table{{"key", t.key},
                                {"token", t.token.ToHex()},
                                {"type_index", static_cast<int64_t>(t.type_index)},
                                {"fields", Fields(t.fields)}});
  }
  meta.insert("types", std::move(types));
  toml::table roots;
  for (const auto& [name, ref] : m.roots) roots.insert(name, ref.ToString());
  meta.insert("roots", std::move(roots));
  std::ostringstream text;
  text << "# structd channel metadata (a snapshot; changes since are in\n"
       << "# meta.journal); written by the daemon, do not edit.\n"
       << meta << "\n";
  return text.str();
}

// One journal line: `r = { op = ..., ... }`.
std::string Record(toml::table fields) {
  fields.is_inline(true);  // `r = { ... }` on one line
  std::ostringstream line;
  line << toml::table{{"r", std::move(fields)}};
  std::string out = line.str();
  // Strings are escaped, so a newline here can only be layout.
  for (char& c : out) {
    if (c == '\n') c = ' ';
  }
  return out;
}

// Reads a type out of a TOML table (snapshot entry or journal record).
absl::StatusOr<ChannelMeta::Type> ReadType(const toml::table& t) {
  ChannelMeta::Type type;
  type.key = t["key"].value_or(std::string());
  std::optional<shm::TypeToken> token =
      shm::TypeToken::FromHex(t["token"].value_or(std::string()));
  int64_t index = t["type_index"].value_or(int64_t{0});
  const toml::array* fields = t["fields"].as_array();
  if (type.key.empty() || !token || index <= 0 || index > UINT32_MAX || fields == nullptr) {
    return absl::DataLossError(absl::StrCat("type '", type.key,
                                            "' lacks a token, index or fields"));
  }
  type.token = *token;
  type.type_index = static_cast<uint32_t>(index);
  for (const toml::node& f : *fields) {
    std::optional<std::string> text = f.value<std::string>();
    if (!text) {
      return absl::DataLossError(absl::StrCat("type '", type.key, "': a field is not text"));
    }
    type.fields.push_back(*text);
  }
  return type;
}

// Applies one record to `m`. Idempotent.
absl::Status Apply(const toml::table& r, ChannelMeta& m) {
  std::string op = r["op"].value_or(std::string());
  if (op == "type") {
    absl::StatusOr<ChannelMeta::Type> t = ReadType(r);
    if (!t.ok()) return t.status();
    for (const ChannelMeta::Type& have : m.types) {
      if (have.key == t->key || have.token == t->token || have.type_index == t->type_index) {
        if (have.key == t->key && have.token == t->token && have.type_index == t->type_index) {
          return absl::OkStatus();  // replayed after a compaction
        }
        return absl::DataLossError(absl::StrCat("type '", t->key, "' conflicts with '", have.key,
                                                "'"));
      }
    }
    m.types.push_back(std::move(*t));
  } else if (op == "root" || op == "unroot") {
    std::string name = r["name"].value_or(std::string());
    if (name.empty()) return absl::DataLossError("a root record has no name");
    if (op == "unroot") {
      m.roots.erase(name);
      return absl::OkStatus();
    }
    std::optional<shm::Ref> ref = shm::Ref::Parse(r["ref"].value_or(std::string()));
    if (!ref) return absl::DataLossError(absl::StrCat("root '", name, "' has no valid ref"));
    m.roots[name] = *ref;
  } else if (op == "seal") {
    m.sealed = true;
  } else if (op == "drop") {
    m.dropped = true;
  } else if (op == "arena") {
    std::optional<uint64_t> epoch = ParseHex64(r["epoch"].value_or(std::string()));
    if (!epoch) return absl::DataLossError("an arena record has no epoch");
    m.arena.epoch = *epoch;
    m.arena.extent_size = static_cast<uint64_t>(r["extent_size"].value_or(int64_t{0}));
    m.arena.max_extents = static_cast<uint32_t>(r["max_extents"].value_or(int64_t{0}));
  } else {
    return absl::DataLossError(absl::StrCat("unknown record '", op, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ChannelMeta> ParseChannelMeta(std::string_view text, const std::string& path,
                                             bool* legacy_clear_text) {
  auto damaged = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": ", what,
                                            " (the file is damaged; restore it from a "
                                            "backup or remove the channel directory)"));
  };
  toml::table meta;
  try {
    meta = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return damaged(absl::StrCat("not valid TOML: ", std::string(e.description())));
  }
  if (meta["format"].value_or(int64_t{0}) != 1) return damaged("unknown format");
  ChannelMeta m;
  m.id = meta["id"].value_or(std::string());
  m.name = meta["name"].value_or(std::string());
  m.created_unix_ms = static_cast<uint64_t>(meta["created_unix_ms"].value_or(int64_t{0}));
  m.creator_uid = meta["creator_uid"].value_or(int64_t{-1});
  // Daemons before format 2 of this file wrote capabilities in clear
  // ("owner_capability"); they are read as digests, and Open rewrites the
  // snapshot so the clear text leaves the disk.
  auto digest = [&](const char* key) -> std::optional<SecretDigest> {
    std::string hashed = meta[absl::StrCat(key, "_sha256")].value_or(std::string());
    if (!hashed.empty()) return SecretDigest::FromHex(hashed);
    std::string clear = meta[key].value_or(std::string());
    if (clear.empty()) return std::nullopt;
    if (legacy_clear_text != nullptr) *legacy_clear_text = true;
    return SecretDigest::Of(clear);
  };
  std::optional<SecretDigest> owner = digest("owner_capability");
  std::optional<SecretDigest> member = digest("member_capability");
  if (owner) m.owner_capability = *owner;
  if (member) m.member_capability = *member;
  m.sealed = meta["sealed"].value_or(false);
  m.dropped = meta["dropped"].value_or(false);
  if (m.id.empty() || m.name.empty() || !owner || !member) {
    return damaged("id, name or a capability is missing");
  }
  if (std::optional<uint64_t> epoch = ParseHex64(meta["arena_epoch"].value_or(std::string()))) {
    m.arena.epoch = *epoch;
  }
  m.arena.extent_size = static_cast<uint64_t>(meta["arena_extent_size"].value_or(int64_t{0}));
  m.arena_memfd = meta["arena_backing"].value_or(std::string("files")) == "memfd";
  m.arena.max_extents = static_cast<uint32_t>(meta["arena_max_extents"].value_or(int64_t{0}));
  if (const toml::array* types = meta["types"].as_array()) {
    for (const toml::node& node : *types) {
      const toml::table* t = node.as_table();
      if (t == nullptr) return damaged("a types entry is not a table");
      absl::StatusOr<ChannelMeta::Type> type = ReadType(*t);
      if (!type.ok()) return damaged(type.status().message());
      m.types.push_back(std::move(*type));
    }
  }
  if (const toml::table* roots = meta["roots"].as_table()) {
    for (const auto& [name, value] : *roots) {
      std::optional<shm::Ref> ref = shm::Ref::Parse(value.value_or(std::string()));
      if (!ref) return damaged(absl::StrCat("root '", std::string(name.str()), "'"));
      m.roots[std::string(name.str())] = *ref;
    }
  }
  return m;
}

std::string RenderChannelMeta(const ChannelMeta& meta) { return Snapshot(meta); }

namespace {

// `legacy_clear_text` is set when the file holds capabilities in clear.
absl::StatusOr<ChannelMeta> ReadSnapshot(const std::string& path, uint64_t* bytes,
                                         bool* legacy_clear_text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": missing"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  *bytes = text.size();
  return ParseChannelMeta(text, path, legacy_clear_text);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetaStore>> MetaStore::Create(const std::string& dir,
                                                             const ChannelMeta& meta) {
  std::unique_ptr<MetaStore> store(new MetaStore(dir));
  store->meta_ = meta;
  if (absl::Status s = store->Compact(); !s.ok()) return s;
  return store;
}

absl::StatusOr<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& dir) {
  std::unique_ptr<MetaStore> store(new MetaStore(dir));
  bool legacy_clear_text = false;
  absl::StatusOr<ChannelMeta> meta =
      ReadSnapshot(store->SnapshotPath(), &store->snapshot_bytes_, &legacy_clear_text);
  if (!meta.ok()) return meta.status();
  store->meta_ = std::move(*meta);
  std::ifstream in(store->JournalPath(), std::ios::binary);
  std::string text;
  if (in) text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  size_t at = 0;
  int line_no = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) break;  // a torn last line: never applied
    std::string line = text.substr(at, end - at);
    ++line_no;
    at = end + 1;
    toml::table t;
    try {
      t = toml::parse(line);
    } catch (const toml::parse_error& e) {
      return absl::DataLossError(absl::StrCat(store->JournalPath(), " line ", line_no,
                                              ": not a record (the file is damaged; restore "
                                              "it from a backup)"));
    }
    const toml::table* r = t["r"].as_table();
    absl::Status s = r == nullptr ? absl::DataLossError("no record") : Apply(*r, store->meta_);
    if (!s.ok()) {
      return absl::DataLossError(absl::StrCat(store->JournalPath(), " line ", line_no, ": ",
                                              s.message(),
                                              " (the file is damaged; restore it from a backup)"));
    }
    ++store->journal_records_;
  }
  store->journal_bytes_ = at;
  if (at != text.size()) {
    // Drop the torn tail so the next append starts a fresh line.
    if (truncate(store->JournalPath().c_str(), static_cast<off_t>(at)) != 0) {
      return base::ErrnoStatus(errno, "truncate " + store->JournalPath());
    }
  }
  if (legacy_clear_text) {
    if (absl::Status s = store->Compact(); !s.ok()) return s;
    spdlog::info("{}: capabilities rewritten as SHA-256 digests", store->SnapshotPath());
  }
  return store;
}

absl::Status MetaStore::Append(const std::string& line) {
  std::string path = JournalPath();
  int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return base::ErrnoStatus(errno, "open " + path);
  struct stat st;
  off_t before = fstat(fd, &st) == 0 ? st.st_size : -1;
  int err = base::WriteAll(fd, line + "\n");
  if (err != 0 && before >= 0) {
    // A partial line must not be followed by the next record.
    (void)!ftruncate(fd, before);
  }
  close(fd);
  if (err != 0) return base::ErrnoStatus(err, "write " + path);
  journal_bytes_ += line.size() + 1;
  ++journal_records_;
  return absl::OkStatus();
}

void MetaStore::MaybeCompact() {
  if (journal_records_ >= kCompactAfterRecords && journal_bytes_ > snapshot_bytes_) {
    // Every record is in the journal already; a failed compaction only
    // postpones the next one.
    if (absl::Status s = Compact(); !s.ok()) {
      spdlog::warn("{}: compaction postponed: {}", dir_, s.ToString());
    }
  }
}

absl::Status MetaStore::Compact() {
  std::string snapshot = Snapshot(meta_);
  if (absl::Status s = base::WriteFileAtomically(SnapshotPath(), snapshot); !s.ok()) return s;
  snapshot_bytes_ = snapshot.size();
  // The snapshot holds everything: the journal starts over. A crash before
  // this point replays records the snapshot already has (idempotent).
  if (absl::Status s = base::WriteFileAtomically(JournalPath(), ""); !s.ok()) return s;
  journal_bytes_ = 0;
  journal_records_ = 0;
  return absl::OkStatus();
}

absl::Status MetaStore::AddType(const ChannelMeta::Type& type) {
  toml::table r{{"op", "type"},
                {"key", type.key},
                {"token", type.token.ToHex()},
                {"type_index", static_cast<int64_t>(type.type_index)},
                {"fields", Fields(type.fields)}};
  if (absl::Status s = Append(Record(std::move(r))); !s.ok()) return s;
  meta_.types.push_back(type);
  MaybeCompact();
  return absl::OkStatus();
}

absl::Status MetaStore::SetRoot(const std::string& name, shm::Ref ref) {
  if (absl::Status s = Append(Record(toml::table{
          {"op", "root"}, {"name", name}, {"ref", ref.ToString()}}));
      !s.ok()) {
    return s;
  }
  meta_.roots[name] = ref;
  MaybeCompact();
  return absl::OkStatus();
}

absl::Status MetaStore::DeleteRoot(const std::string& name) {
  if (absl::Status s = Append(Record(toml::table{{"op", "unroot"}, {"name", name}})); !s.ok()) {
    return s;
  }
  meta_.roots.erase(name);
  MaybeCompact();
  return absl::OkStatus();
}

absl::Status MetaStore::Seal() {
  if (meta_.sealed) return absl::OkStatus();
  if (absl::Status s = Append(Record(toml::table{{"op", "seal"}})); !s.ok()) return s;
  meta_.sealed = true;
  return absl::OkStatus();
}

absl::Status MetaStore::MarkDropped() {
  if (meta_.dropped) return absl::OkStatus();
  if (absl::Status s = Append(Record(toml::table{{"op", "drop"}})); !s.ok()) return s;
  meta_.dropped = true;
  return absl::OkStatus();
}

absl::Status MetaStore::SetArena(const shm::ArenaIdentity& arena) {
  if (absl::Status s = Append(Record(toml::table{
          {"op", "arena"},
          {"epoch", absl::StrFormat("%016x", arena.epoch)},
          {"extent_size", static_cast<int64_t>(arena.extent_size)},
          {"max_extents", static_cast<int64_t>(arena.max_extents)}}));
      !s.ok()) {
    return s;
  }
  meta_.arena = arena;
  return absl::OkStatus();
}

}  // namespace structd::server
