#include "server/src/core/ledger.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace structd::server {
namespace {

constexpr uint64_t kLedgerMagic = 0x315245474445444cull;  // "LDEDGER1"
constexpr uint64_t kEmpty = 0;
// Never a valid Ref: valid refs have extent bits (>= 2^50) set.
constexpr uint64_t kTombstone = 1;
constexpr uint64_t kInitialCapacity = 64;

uint64_t Hash(uint64_t v) {
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  return v;
}

absl::Status Errno(int err, const std::string& what) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG || err == ENOMEM) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", strerror(err),
                     " (free space on the state directory's file system)"));
  }
  return absl::InternalError(absl::StrCat(what, ": ", strerror(err)));
}

}  // namespace

// Lives at offset 0 of the file; `capacity` slots of one word follow.
struct Ledger::Header {
  uint64_t magic;
  uint64_t session_tag;  // which session this ledger belongs to
  uint64_t capacity;     // power of two
  uint64_t used;         // live entries
  uint64_t tombstones;
  uint64_t reserved[3];
};

// An open, mapped table file.
struct Ledger::Table {
  int fd = -1;
  uint8_t* map = nullptr;
  uint64_t bytes = 0;
};

Ledger::Ledger(std::string path, const Table& table, uint64_t session_tag,
               uint64_t used, uint64_t tombstones)
    : path_(std::move(path)),
      fd_(table.fd),
      map_(table.map),
      map_bytes_(table.bytes),
      capacity_((table.bytes - sizeof(Header)) / sizeof(uint64_t)),
      session_tag_(session_tag),
      used_(used),
      tombstones_(tombstones) {}

Ledger::~Ledger() {
  if (map_ != nullptr) munmap(map_, map_bytes_);
  if (fd_ >= 0) close(fd_);
}

uint64_t* Ledger::slots() const {
  return reinterpret_cast<uint64_t*>(map_ + sizeof(Header));
}
uint64_t Ledger::size() const { return used_; }
uint64_t Ledger::session_tag() const { return session_tag_; }

void Ledger::PublishCounters() {
  auto* h = reinterpret_cast<Header*>(map_);
  h->used = used_;
  h->tombstones = tombstones_;
}

// A complete table file at `path` + ".new", filled with `entries`, then
// renamed over `path`: a crash leaves the old file or the new one, never a
// mix.
absl::StatusOr<Ledger::Table> Ledger::WriteTable(
    const std::string& path, uint64_t session_tag, uint64_t capacity,
    const std::vector<shm::Ref>& entries) {
  std::string tmp = path + ".new";
  int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno(errno, "ledger: create " + tmp);
  uint64_t bytes = sizeof(Header) + capacity * sizeof(uint64_t);
  int err;
  do {
    err = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  } while (err == EINTR);
  void* p = err == 0 ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                            MAP_SHARED, fd, 0)
                     : MAP_FAILED;
  if (p == MAP_FAILED) {
    if (err == 0) err = errno;
    close(fd);
    unlink(tmp.c_str());
    return Errno(err, "ledger: allocate " + tmp);
  }
  auto* h = static_cast<Header*>(p);
  h->magic = kLedgerMagic;
  h->session_tag = session_tag;
  h->capacity = capacity;
  h->used = 0;
  h->tombstones = 0;
  auto* s = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(p) +
                                        sizeof(Header));
  for (shm::Ref r : entries) {
    uint64_t i = Hash(r.bits()) & (capacity - 1);
    while (s[i] != kEmpty) i = (i + 1) & (capacity - 1);
    s[i] = r.bits();
    ++h->used;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    munmap(p, bytes);
    close(fd);
    unlink(tmp.c_str());
    return Errno(err, "ledger: publish " + path);
  }
  return Table{fd, static_cast<uint8_t*>(p), bytes};
}

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Create(const std::string& path,
                                                       uint64_t session_tag) {
  absl::StatusOr<Table> t = WriteTable(path, session_tag, kInitialCapacity, {});
  if (!t.ok()) return t.status();
  return std::unique_ptr<Ledger>(new Ledger(path, *t, session_tag, 0, 0));
}

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("ledger: no file ", path));
    }
    return Errno(errno, "ledger: open " + path);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Header))) {
    close(fd);
    return absl::DataLossError(absl::StrCat("ledger ", path, ": truncated"));
  }
  uint64_t bytes = static_cast<uint64_t>(st.st_size);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    return Errno(err, "ledger: map " + path);
  }
  auto* h = static_cast<Header*>(p);
  uint64_t cap = h->capacity;
  bool ok = h->magic == kLedgerMagic && cap >= kInitialCapacity &&
            (cap & (cap - 1)) == 0 && cap < (uint64_t{1} << 40) &&
            sizeof(Header) + cap * sizeof(uint64_t) == bytes;
  // Recount instead of trusting the counters.
  uint64_t used = 0, tomb = 0;
  if (ok) {
    auto* s = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(p) +
                                          sizeof(Header));
    for (uint64_t i = 0; i < cap; ++i) {
      if (s[i] == kTombstone) {
        ++tomb;
      } else if (s[i] != kEmpty) {
        ++used;
      }
    }
    ok = used + tomb < cap;  // probing needs an empty slot to terminate
  }
  if (!ok) {
    munmap(p, bytes);
    close(fd);
    return absl::DataLossError(absl::StrCat(
        "ledger ", path, ": damaged header (its references cannot be "
        "released automatically; run 'structctl check')"));
  }
  auto ledger = std::unique_ptr<Ledger>(new Ledger(
      path, Table{fd, static_cast<uint8_t*>(p), bytes}, h->session_tag, used, tomb));
  ledger->PublishCounters();
  return ledger;
}

absl::Status Ledger::Rehash(uint64_t min_capacity) {
  std::vector<shm::Ref> entries = Entries();
  // Scribbled slots read as entries too: size the table for what is there.
  uint64_t new_capacity = min_capacity;
  while ((entries.size() + 1) * 2 > new_capacity) new_capacity *= 2;
  absl::StatusOr<Table> t =
      WriteTable(path_, session_tag_, new_capacity, entries);
  if (!t.ok()) return t.status();
  munmap(map_, map_bytes_);
  close(fd_);
  fd_ = t->fd;
  map_ = t->map;
  map_bytes_ = t->bytes;
  capacity_ = new_capacity;
  used_ = entries.size();
  tombstones_ = 0;
  return absl::OkStatus();
}

absl::Status Ledger::Add(shm::Ref ref) {
  // Keep the load (entries + tombstones) under 3/4; Rehash sizes the new
  // table for the entries there are.
  if ((used_ + tombstones_ + 1) * 4 > capacity_ * 3) {
    if (absl::Status s = Rehash(capacity_); !s.ok()) return s;
  }
  // Two tries: bytes written into the file behind the daemon's back may
  // have taken every free slot; a rehash sized for what is there makes room.
  for (int attempt = 0; attempt < 2; ++attempt) {
    uint64_t mask = capacity_ - 1;
    uint64_t* s = slots();
    for (uint64_t i = Hash(ref.bits()) & mask, n = 0; n <= mask;
         i = (i + 1) & mask, ++n) {
      if (s[i] != kEmpty && s[i] != kTombstone) continue;
      if (s[i] == kTombstone && tombstones_ > 0) --tombstones_;
      s[i] = ref.bits();
      ++used_;
      PublishCounters();
      return absl::OkStatus();
    }
    if (absl::Status st = Rehash(capacity_ * 2); !st.ok()) return st;
  }
  return absl::InternalError(absl::StrCat("ledger ", path_, ": no free slot after a rehash"));
}

absl::Status Ledger::AddAll(const std::vector<shm::Ref>& refs) {
  for (size_t i = 0; i < refs.size(); ++i) {
    if (absl::Status s = Add(refs[i]); !s.ok()) {
      for (size_t j = 0; j < i; ++j) Remove(refs[j]);
      return s;
    }
  }
  return absl::OkStatus();
}

bool Ledger::Remove(shm::Ref ref) {
  uint64_t mask = capacity_ - 1;
  uint64_t* s = slots();
  for (uint64_t i = Hash(ref.bits()) & mask, n = 0; n <= mask;
       i = (i + 1) & mask, ++n) {
    if (s[i] == kEmpty) return false;
    if (s[i] == ref.bits()) {
      s[i] = kTombstone;
      if (used_ > 0) --used_;
      ++tombstones_;
      PublishCounters();
      return true;
    }
  }
  return false;
}

bool Ledger::Contains(shm::Ref ref) const {
  uint64_t mask = capacity_ - 1;
  uint64_t* s = slots();
  for (uint64_t i = Hash(ref.bits()) & mask, n = 0; n <= mask;
       i = (i + 1) & mask, ++n) {
    if (s[i] == kEmpty) return false;
    if (s[i] == ref.bits()) return true;
  }
  return false;
}

std::vector<shm::Ref> Ledger::Entries() const {
  std::vector<shm::Ref> out;
  out.reserve(used_);
  uint64_t* s = slots();
  for (uint64_t i = 0; i < capacity_; ++i) {
    if (s[i] != kEmpty && s[i] != kTombstone) {
      out.push_back(shm::Ref::FromBits(s[i]));
    }
  }
  return out;
}

void Ledger::Unlink() { unlink(path_.c_str()); }

}  // namespace structd::server
