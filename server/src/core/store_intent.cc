#include "core/store_intent.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "structd/base/posix.h"

namespace structd::server {
namespace {

constexpr uint64_t kIntentMagic = 0x31544e45544e4953ull;  // "SINTENT1"
constexpr size_t kMaxSession = 256;
constexpr uint64_t kMaxEntries = 10'000'000;

uint64_t Fnv1a(const std::string& bytes, size_t from) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = from; i < bytes.size(); ++i) {
    h ^= static_cast<uint8_t>(bytes[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

void Put(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }

bool Get(const std::string& in, size_t& at, uint64_t* v) {
  if (at > in.size() || in.size() - at < 8) return false;
  std::memcpy(v, in.data() + at, 8);
  at += 8;
  return true;
}

}  // namespace

// Layout: magic, checksum (of everything after it), session length,
// field count, count count, the session bytes padded to 8, then
// (target, offset, value) triples and (ref, count) pairs, 8 bytes each.
absl::Status WriteStoreIntent(const std::string& path, const StoreIntent& intent) {
  std::string body;
  Put(body, intent.session.size());
  Put(body, intent.fields.size());
  Put(body, intent.counts.size());
  body += intent.session;
  body.append((8 - intent.session.size() % 8) % 8, '\0');
  for (const auto& f : intent.fields) {
    Put(body, f.target.bits());
    Put(body, f.offset);
    Put(body, f.value.bits());
  }
  for (const auto& c : intent.counts) {
    Put(body, c.ref.bits());
    Put(body, c.count);
  }
  std::string file;
  Put(file, kIntentMagic);
  Put(file, 0);
  file += body;
  uint64_t sum = Fnv1a(file, 16);
  std::memcpy(file.data() + 8, &sum, 8);
  return base::WriteFileAtomically(path, file);
}

absl::StatusOr<std::optional<StoreIntent>> ReadStoreIntent(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::optional<StoreIntent>();
  std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto damaged = [&](const char* what) {
    return absl::DataLossError(absl::StrCat(path, ": ", what, " (ignored; run structctl check)"));
  };
  size_t at = 0;
  uint64_t magic = 0, sum = 0, session_len = 0, nfields = 0, ncounts = 0;
  if (!Get(file, at, &magic) || magic != kIntentMagic || !Get(file, at, &sum)) {
    return damaged("not a store intent");
  }
  if (Fnv1a(file, 16) != sum) return damaged("checksum mismatch");
  if (!Get(file, at, &session_len) || !Get(file, at, &nfields) || !Get(file, at, &ncounts) ||
      session_len > kMaxSession || nfields > kMaxEntries || ncounts > kMaxEntries) {
    return damaged("bad sizes");
  }
  size_t padded = (session_len + 7) / 8 * 8;
  if (file.size() != at + padded + nfields * 24 + ncounts * 16) return damaged("bad length");
  StoreIntent intent;
  intent.session = file.substr(at, session_len);
  at += padded;
  for (uint64_t i = 0; i < nfields; ++i) {
    uint64_t t = 0, o = 0, v = 0;
    Get(file, at, &t);
    Get(file, at, &o);
    Get(file, at, &v);
    if (o > UINT32_MAX) return damaged("bad field offset");
    intent.fields.push_back({shm::Ref::FromBits(t), static_cast<uint32_t>(o), shm::Ref::FromBits(v)});
  }
  for (uint64_t i = 0; i < ncounts; ++i) {
    uint64_t r = 0, c = 0;
    Get(file, at, &r);
    Get(file, at, &c);
    intent.counts.push_back({shm::Ref::FromBits(r), c});
  }
  return std::optional<StoreIntent>(std::move(intent));
}

void RemoveStoreIntent(const std::string& path) { unlink(path.c_str()); }

}  // namespace structd::server
