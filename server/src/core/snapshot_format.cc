#include "core/snapshot_format.h"

#include <bit>
#include <sstream>

#include <toml++/toml.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/shm/format.h"

namespace structd::server {
namespace {

constexpr char kChecksumKey[] = "manifest_sha256 = \"";
constexpr size_t kChecksumKeySize = sizeof(kChecksumKey) - 1;

absl::Status Damaged(const std::string& what) {
  return absl::DataLossError(absl::StrCat(
      "snapshot manifest.toml: ", what,
      " (the snapshot is damaged or incomplete; use an intact copy, or take a new snapshot)"));
}

bool IsHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string HostArchitecture() {
#if defined(__x86_64__)
  std::string cpu = "x86_64";
#elif defined(__aarch64__)
  std::string cpu = "aarch64";
#else
  std::string cpu = "unknown";
#endif
  return absl::StrCat(cpu, std::endian::native == std::endian::little ? "-le" : "-be",
                      sizeof(void*) == 8 ? "-lp64" : "-ilp32");
}

const SnapshotFileEntry* SnapshotManifest::Find(std::string_view name) const {
  for (const SnapshotFileEntry& f : files) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool IsSnapshotDataFile(std::string_view name) {
  if (name == kSnapshotMetaFile || name == shm::kArenaHeaderFile) return true;
  if (!name.starts_with("extent.")) return false;
  std::string_view digits = name.substr(7);
  uint32_t id = 0;
  return !digits.empty() && digits.size() <= 6 && (digits == "0" || digits[0] != '0') &&
         absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &id) &&
         id < shm::kMaxExtents;
}

std::string RenderSnapshotManifest(const SnapshotManifest& m) {
  toml::table t;
  t.insert("format", "structd-snapshot");
  t.insert("version", static_cast<int64_t>(m.version));
  t.insert("architecture", m.architecture);
  t.insert("daemon_version", m.daemon_version);
  t.insert("taken_unix_ms", static_cast<int64_t>(m.taken_unix_ms));
  t.insert("channel_id", m.channel_id);
  t.insert("channel_name", m.channel_name);
  t.insert("arena_format_version", static_cast<int64_t>(m.arena_format_version));
  t.insert("extent_size", static_cast<int64_t>(m.extent_size));
  t.insert("max_extents", static_cast<int64_t>(m.max_extents));
  t.insert("extent_count", static_cast<int64_t>(m.extent_count));
  t.insert("epoch", absl::StrFormat("%016x", m.epoch));
  t.insert("live_instances", static_cast<int64_t>(m.live_instances));
  toml::array files;
  for (const SnapshotFileEntry& f : m.files) {
    files.push_back(toml::table{
        {"name", f.name}, {"bytes", static_cast<int64_t>(f.bytes)}, {"sha256", f.sha256}});
  }
  t.insert("files", std::move(files));
  std::ostringstream out;
  out << "# structd channel snapshot (doc/snapshots.md); restore with\n"
      << "# `structctl restore DIR`. Written by the daemon: do not edit, the\n"
      << "# last line is the SHA-256 of everything above it.\n"
      << t << "\n";
  std::string body = out.str();
  return absl::StrCat(body, kChecksumKey, Sha256Hex(body), "\"\n");
}

absl::StatusOr<SnapshotManifest> ParseSnapshotManifest(std::string_view text) {
  size_t at = text.rfind(std::string("\n") + kChecksumKey);
  if (at == std::string_view::npos) return Damaged("no manifest_sha256 line at its end");
  std::string_view body = text.substr(0, at + 1);
  std::string_view rest = text.substr(at + 1 + kChecksumKeySize);
  if (rest.size() < 66 || rest.substr(64, 2) != "\"\n" ||
      rest.find_first_not_of(" \t\r\n", 66) != std::string_view::npos) {
    return Damaged("its manifest_sha256 line is malformed");
  }
  if (std::string(rest.substr(0, 64)) != Sha256Hex(body)) {
    return Damaged("its checksum does not match its text (it was changed or cut)");
  }
  toml::table t;
  try {
    t = toml::parse(body, std::string_view("manifest.toml"));
  } catch (const toml::parse_error& e) {
    return Damaged(absl::StrCat("not valid TOML: ", std::string(e.description())));
  }
  if (t["format"].value_or(std::string()) != "structd-snapshot") {
    return Damaged("format is not \"structd-snapshot\"");
  }
  SnapshotManifest m;
  m.version = static_cast<uint32_t>(t["version"].value_or(int64_t{0}));
  if (m.version != kSnapshotFormatVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "snapshot: format version %d; this daemon reads version %d (restore it with the "
        "structd version that took it, or one that reads its version)",
        m.version, kSnapshotFormatVersion));
  }
  m.architecture = t["architecture"].value_or(std::string());
  if (m.architecture != HostArchitecture()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot: taken on a ", m.architecture.empty() ? "?" : m.architecture,
        " host; this host is ", HostArchitecture(),
        " (an arena's bytes mean the same only on the same architecture)"));
  }
  auto u64 = [&](const char* key) { return static_cast<uint64_t>(t[key].value_or(int64_t{-1})); };
  m.daemon_version = t["daemon_version"].value_or(std::string());
  m.taken_unix_ms = u64("taken_unix_ms");
  m.channel_id = t["channel_id"].value_or(std::string());
  m.channel_name = t["channel_name"].value_or(std::string());
  m.arena_format_version = static_cast<uint32_t>(u64("arena_format_version"));
  m.extent_size = u64("extent_size");
  m.max_extents = static_cast<uint32_t>(u64("max_extents"));
  m.extent_count = static_cast<uint32_t>(u64("extent_count"));
  m.live_instances = u64("live_instances");
  uint64_t epoch = 0;
  if (!absl::SimpleHexAtoi(t["epoch"].value_or(std::string()), &epoch) || epoch == 0) {
    return Damaged("epoch is missing");
  }
  m.epoch = epoch;
  if (m.channel_name.empty()) return Damaged("channel_name is missing");
  if (m.arena_format_version != shm::kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "snapshot: arena format version %d; this daemon uses version %d (restore it with "
        "the structd version that took it)",
        m.arena_format_version, shm::kFormatVersion));
  }
  if (m.extent_size == 0 || m.extent_size > (1ull << 40) || m.max_extents == 0 ||
      m.max_extents > shm::kMaxExtents || m.extent_count == 0 ||
      m.extent_count > m.max_extents) {
    return Damaged("its arena geometry (extent_size, max_extents, extent_count) is impossible");
  }
  const toml::array* files = t["files"].as_array();
  if (files == nullptr) return Damaged("files is missing");
  for (const toml::node& node : *files) {
    const toml::table* f = node.as_table();
    if (f == nullptr) return Damaged("a files entry is not a table");
    SnapshotFileEntry e;
    e.name = (*f)["name"].value_or(std::string());
    int64_t bytes = (*f)["bytes"].value_or(int64_t{-1});
    e.sha256 = (*f)["sha256"].value_or(std::string());
    if (!IsSnapshotDataFile(e.name) || bytes < 0 || !IsHex64(e.sha256) || m.Find(e.name)) {
      return Damaged(absl::StrCat("files entry '", e.name, "' is malformed or repeated"));
    }
    e.bytes = static_cast<uint64_t>(bytes);
    m.files.push_back(std::move(e));
  }
  // Exactly: meta.toml, the header, extents 0..extent_count-1 of full size.
  const SnapshotFileEntry* meta = m.Find(kSnapshotMetaFile);
  if (meta == nullptr || meta->bytes > kMaxSnapshotMetaBytes) {
    return Damaged("meta.toml is missing from files, or too large");
  }
  if (m.Find(shm::kArenaHeaderFile) == nullptr ||
      m.Find(shm::kArenaHeaderFile)->bytes != sizeof(shm::ArenaHeader)) {
    return Damaged(absl::StrCat("the arena header is missing or not ",
                                sizeof(shm::ArenaHeader), " bytes"));
  }
  for (uint32_t i = 0; i < m.extent_count; ++i) {
    const SnapshotFileEntry* e = m.Find(absl::StrCat("extent.", i));
    if (e == nullptr || e->bytes != m.extent_size) {
      return Damaged(absl::StrCat("extent.", i, " is missing or not extent_size bytes"));
    }
  }
  if (m.files.size() != 2 + m.extent_count) return Damaged("files names extents past extent_count");
  return m;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
  EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr);
}

void Sha256::Update(const void* data, size_t size) {
  EVP_DigestUpdate(ctx_.get(), data, size);
}

std::string Sha256::HexDigest() {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_.get(), d, &n);
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) absl::StrAppendFormat(&hex, "%02x", d[i]);
  return hex;
}

std::string Sha256Hex(std::string_view data) {
  Sha256 h;
  h.Update(data.data(), data.size());
  return h.HexDigest();
}

}  // namespace structd::server
