#include "core/ledger.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/base/posix.h"

namespace structd::server {
namespace {

constexpr uint64_t kLedgerMagicV1 = 0x315245474445444cull;  // "LDEDGER1"
constexpr uint64_t kLedgerMagicV2 = 0x325245474445444cull;  // "LDEDGER2"
// Format 3: slots hashed and matched by block (a ref without its
// generation); format 2 hashed whole refs.
constexpr uint64_t kLedgerMagic = 0x335245474445444cull;    // "LDEDGER3"
constexpr uint64_t kEmpty = 0;
// Never a valid Ref: valid refs have extent bits (>= 2^50) set.
constexpr uint64_t kTombstone = 1;
constexpr uint64_t kInitialCapacity = 64;
// A refcount is 32 bits: a larger count can only be scribbled.
constexpr uint64_t kMaxCount = UINT32_MAX;

// A ref's bits without its generation: the block it names.
uint64_t BlockBits(uint64_t ref_bits) { return ref_bits & ~uint64_t{shm::kGenerationMask}; }

uint64_t Hash(uint64_t ref_bits) {
  uint64_t v = BlockBits(ref_bits);
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  return v;
}

bool IsRef(uint64_t bits) { return bits != kEmpty && bits != kTombstone; }

// Whether `a`'s generation tag is ahead of `b`'s (modulo the tag's range,
// within half of it): a lookup with an older ref (a write-ahead record
// replayed after a restart) must not turn the entry back.
bool IsNewer(uint64_t a, uint64_t b) {
  const uint64_t mask = shm::kGenerationMask;
  const uint64_t ahead = ((a & mask) - (b & mask)) & mask;
  return ahead != 0 && ahead < (mask + 1) / 2;
}

absl::Status Errno(int err, const std::string& what) { return base::ErrnoStatus(err, what); }

// Single-word stores: the order of two stores is the crash-atomicity
// argument of the file (see ledger.h), so the compiler must keep it.
void Store(uint64_t& word, uint64_t value) {
  std::atomic_ref<uint64_t>(word).store(value, std::memory_order_release);
}

}  // namespace

// Lives at offset 0 of the file; `capacity` slots follow.
struct Ledger::Header {
  uint64_t magic;
  uint64_t session_tag;  // the tag of the session's record (0: none yet)
  uint64_t capacity;     // power of two
  uint64_t used;         // slots holding a ref
  uint64_t tombstones;
  uint64_t record;       // the session's record (ref bits; 0: none yet)
  uint64_t reserved[2];
};


// One distinct ref. `ref` is kEmpty, kTombstone or a ref's bits; `count`
// is meaningful only while `ref` is a ref.
struct Ledger::Slot {
  uint64_t ref;
  uint64_t count;
};


// An open, mapped table file.
struct Ledger::Table {
  int fd = -1;
  uint8_t* map = nullptr;
  uint64_t bytes = 0;
};

Ledger::Ledger(std::string path, const Table& table, uint64_t session_tag,
               uint64_t used, uint64_t tombstones, uint64_t refs)
    : path_(std::move(path)),
      fd_(table.fd),
      map_(table.map),
      map_bytes_(table.bytes),
      capacity_((table.bytes - sizeof(Header)) / sizeof(Slot)),
      session_tag_(session_tag),
      used_(used),
      tombstones_(tombstones),
      refs_(refs) {}

Ledger::~Ledger() {
  guard_ = shm::GuardedMapping();
  if (map_ != nullptr) munmap(map_, map_bytes_);
}

Ledger::Slot* Ledger::slots() const {
  static_assert(sizeof(Header) == 64 && sizeof(Slot) == 16, "ledger format 3");
  return reinterpret_cast<Slot*>(map_ + sizeof(Header));
}
uint64_t Ledger::size() const { return refs_; }
uint64_t Ledger::session_tag() const { return session_tag_; }

void Ledger::SetRecord(shm::Ref record, uint32_t tag) {
  // The tag first: a daemon killed between the two stores leaves a tag
  // without a record, which names nothing (the record is then an instance
  // nothing references, freed by the census).
  auto* h = reinterpret_cast<Header*>(map_);
  Store(h->session_tag, tag);
  Store(h->record, record.bits());
  session_tag_ = tag;
  record_ = record.bits();
}

void Ledger::PublishCounters() {
  auto* h = reinterpret_cast<Header*>(map_);
  h->used = used_;
  h->tombstones = tombstones_;
}

// A complete table file at `path` + ".new", filled with `entries`, then
// renamed over `path`: a crash leaves the old file or the new one, never a
// mix.
absl::StatusOr<Ledger::Table> Ledger::WriteTable(
    const std::string& path, uint64_t session_tag, uint64_t record, uint64_t capacity,
    const std::vector<LedgerEntry>& entries) {
  std::string tmp = path + ".new";
  unlink(tmp.c_str());  // a leftover of a writer that died; never followed
  int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno(errno, "ledger: create " + tmp);
  uint64_t bytes = sizeof(Header) + capacity * sizeof(Slot);
  int err = base::Fallocate(fd, static_cast<off_t>(bytes));
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
  h->record = record;
  h->capacity = capacity;
  h->used = 0;
  h->tombstones = 0;
  auto* s = reinterpret_cast<Slot*>(static_cast<uint8_t*>(p) + sizeof(Header));
  for (const LedgerEntry& e : entries) {
    uint64_t i = Hash(e.ref.bits()) & (capacity - 1);
    while (s[i].ref != kEmpty && BlockBits(s[i].ref) != BlockBits(e.ref.bits())) {
      i = (i + 1) & (capacity - 1);
    }
    if (s[i].ref != kEmpty) {  // two entries of one block (format 2): one
      s[i].count = std::min(kMaxCount, s[i].count + e.count);
      continue;
    }
    s[i].count = e.count;
    s[i].ref = e.ref.bits();
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
                                                       uint64_t session_tag,
                                                       shm::DamageFlag* damage) {
  absl::StatusOr<Table> t = WriteTable(path, session_tag, 0, kInitialCapacity, {});
  if (!t.ok()) return t.status();
  auto ledger = std::unique_ptr<Ledger>(new Ledger(path, *t, session_tag, 0, 0, 0));
  ledger->damage_ = damage;
  ledger->guard_ = shm::GuardedMapping(ledger->map_, ledger->map_bytes_, damage, 0);
  return ledger;
}

namespace {

// Reads a format-1 table (one word per owned reference) into entries.
bool ReadFormat1(const uint8_t* p, uint64_t bytes, std::vector<LedgerEntry>* out) {
  constexpr uint64_t kHeader = 64;
  const auto* words = reinterpret_cast<const uint64_t*>(p);
  uint64_t cap = words[2];
  if (cap < kInitialCapacity || (cap & (cap - 1)) != 0 || cap >= (uint64_t{1} << 40) ||
      kHeader + cap * sizeof(uint64_t) != bytes) {
    return false;
  }
  std::map<uint64_t, uint64_t> counts;
  const uint64_t* s = words + kHeader / sizeof(uint64_t);
  for (uint64_t i = 0; i < cap; ++i) {
    if (IsRef(s[i])) ++counts[s[i]];
  }
  for (const auto& [bits, n] : counts) out->push_back({shm::Ref::FromBits(bits), n});
  return true;
}

// Reads a format-2 table (slots hashed by whole ref) into entries.
bool ReadFormat2(const uint8_t* p, uint64_t bytes, std::vector<LedgerEntry>* out) {
  constexpr uint64_t kHeader = 64;
  const auto* words = reinterpret_cast<const uint64_t*>(p);
  uint64_t cap = words[2];
  if (cap < kInitialCapacity || (cap & (cap - 1)) != 0 || cap >= (uint64_t{1} << 40) ||
      kHeader + cap * 16 != bytes) {
    return false;
  }
  const uint64_t* s = words + kHeader / sizeof(uint64_t);
  for (uint64_t i = 0; i < cap; ++i) {
    uint64_t ref = s[2 * i], count = s[2 * i + 1];
    if (!IsRef(ref)) continue;
    if (count == 0 || count > kMaxCount) count = 1;  // damage: see Open
    out->push_back({shm::Ref::FromBits(ref), count});
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const std::string& path,
                                                     shm::DamageFlag* damage) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("ledger: no file ", path));
    }
    return Errno(errno, "ledger: open " + path);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size < static_cast<off_t>(sizeof(Header))) {
    close(fd);
    return absl::DataLossError(absl::StrCat("ledger ", path, ": truncated or not a file"));
  }
  uint64_t bytes = static_cast<uint64_t>(st.st_size);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    return Errno(err, "ledger: map " + path);
  }
  // Guarded from the first read on: the file may be cut short meanwhile.
  shm::GuardedMapping guard(p, bytes, damage, 0);
  auto* h = static_cast<Header*>(p);
  auto damaged = [&] {
    guard = shm::GuardedMapping();
    munmap(p, bytes);
    close(fd);
    return absl::DataLossError(absl::StrCat(
        "ledger ", path, ": damaged header (its references cannot be "
        "released automatically; run 'structctl check')"));
  };
  if (h->magic == kLedgerMagicV1 || h->magic == kLedgerMagicV2) {
    // Written by an older daemon: convert (the rename keeps the old file
    // until the new one is complete).
    std::vector<LedgerEntry> entries;
    uint64_t tag = h->session_tag;
    const bool read = h->magic == kLedgerMagicV1
                          ? ReadFormat1(static_cast<uint8_t*>(p), bytes, &entries)
                          : ReadFormat2(static_cast<uint8_t*>(p), bytes, &entries);
    if (!read) return damaged();
    guard = shm::GuardedMapping();
    munmap(p, bytes);
    close(fd);
    uint64_t capacity = kInitialCapacity;
    while ((entries.size() + 1) * 2 > capacity) capacity *= 2;
    absl::StatusOr<Table> t = WriteTable(path, tag, 0, capacity, entries);
    if (!t.ok()) return t.status();
    // Entries of one block were merged: count what the table holds.
    auto ledger = std::unique_ptr<Ledger>(new Ledger(path, *t, tag, 0, 0, 0));
    for (const LedgerEntry& e : ledger->Entries()) {
      ++ledger->used_;
      ledger->refs_ += e.count;
    }
    ledger->damage_ = damage;
    ledger->guard_ = shm::GuardedMapping(ledger->map_, ledger->map_bytes_, damage, 0);
    return ledger;
  }
  uint64_t cap = h->capacity;
  bool ok = h->magic == kLedgerMagic && cap >= kInitialCapacity &&
            (cap & (cap - 1)) == 0 && cap < (uint64_t{1} << 40) &&
            sizeof(Header) + cap * sizeof(Slot) == bytes;
  // Recount instead of trusting the counters.
  uint64_t used = 0, tomb = 0, refs = 0;
  if (ok) {
    auto* s = reinterpret_cast<Slot*>(static_cast<uint8_t*>(p) + sizeof(Header));
    for (uint64_t i = 0; i < cap; ++i) {
      if (s[i].ref == kTombstone) {
        ++tomb;
      } else if (s[i].ref != kEmpty) {
        // A count of 0 or above a refcount's range is damage: count the
        // slot once (a leak is recoverable, a premature free is not).
        if (s[i].count == 0 || s[i].count > kMaxCount) s[i].count = 1;
        ++used;
        refs += s[i].count;
      }
    }
    ok = used + tomb < cap;  // probing needs an empty slot to terminate
  }
  if (!ok) return damaged();
  auto ledger = std::unique_ptr<Ledger>(new Ledger(
      path, Table{fd, static_cast<uint8_t*>(p), bytes}, h->session_tag, used, tomb, refs));
  ledger->record_ = h->record;
  ledger->damage_ = damage;
  ledger->guard_ = std::move(guard);
  ledger->PublishCounters();
  return ledger;
}

absl::Status Ledger::Rehash(uint64_t min_capacity) {
  if (damage_ != nullptr && damage_->damaged()) {
    // The mapping reads zeros since the file was cut short: a table built
    // from it would replace what the file held with nothing. Leave the
    // file as it is; a restart sets it aside and keeps its counts.
    return absl::DataLossError(absl::StrCat(
        "ledger ", path_, ": the file was truncated while mapped (restart the daemon)"));
  }
  std::vector<LedgerEntry> entries = Entries();
  // Scribbled slots read as entries too: size the table for what is there.
  uint64_t new_capacity = min_capacity;
  while ((entries.size() + 1) * 2 > new_capacity) new_capacity *= 2;
  absl::StatusOr<Table> t =
      WriteTable(path_, session_tag_, record_, new_capacity, entries);
  if (!t.ok()) return t.status();
  guard_ = shm::GuardedMapping();
  munmap(map_, map_bytes_);
  fd_ = base::UniqueFd(t->fd);
  map_ = t->map;
  map_bytes_ = t->bytes;
  guard_ = shm::GuardedMapping(map_, map_bytes_, damage_, 0);
  capacity_ = new_capacity;
  // WriteTable merges entries of one block (only scribbled slots repeat a
  // block): count what the new table holds.
  used_ = 0;
  refs_ = 0;
  tombstones_ = 0;
  for (const LedgerEntry& e : Entries()) {
    ++used_;
    refs_ += e.count;
  }
  return absl::OkStatus();
}

Ledger::Slot* Ledger::Find(shm::Ref ref) const {
  uint64_t mask = capacity_ - 1;
  Slot* s = slots();
  for (uint64_t i = Hash(ref.bits()) & mask, n = 0; n <= mask;
       i = (i + 1) & mask, ++n) {
    if (s[i].ref == kEmpty) return nullptr;
    if (IsRef(s[i].ref) && BlockBits(s[i].ref) == BlockBits(ref.bits())) {
      // The owner recycled the block in place since the entry was written
      // (shm/local_recycle.h): the session's references are to the
      // instance there now, which the caller has resolved. One 8-byte
      // store renews the entry.
      if (s[i].ref != ref.bits() && IsNewer(ref.bits(), s[i].ref)) Store(s[i].ref, ref.bits());
      return &s[i];
    }
  }
  return nullptr;
}

uint64_t Ledger::Count(shm::Ref ref) const {
  const Slot* s = Find(ref);
  return s == nullptr ? 0 : std::min(s->count, kMaxCount);
}

absl::Status Ledger::Add(shm::Ref ref) {
  if (Slot* s = Find(ref)) {
    if (s->count >= kMaxCount) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "ledger: this session already owns %d references to %s (release some)",
          s->count, ref.ToString()));
    }
    Store(s->count, s->count + 1);
    ++refs_;
    return absl::OkStatus();
  }
  // Keep the load (entries + tombstones) under 3/4; Rehash sizes the new
  // table for the entries there are.
  if ((used_ + tombstones_ + 1) * 4 > capacity_ * 3) {
    if (absl::Status s = Rehash(capacity_); !s.ok()) return s;
  }
  // Two tries: bytes written into the file behind the daemon's back may
  // have taken every free slot; a rehash sized for what is there makes room.
  for (int attempt = 0; attempt < 2; ++attempt) {
    uint64_t mask = capacity_ - 1;
    Slot* s = slots();
    for (uint64_t i = Hash(ref.bits()) & mask, n = 0; n <= mask;
         i = (i + 1) & mask, ++n) {
      if (IsRef(s[i].ref)) continue;  // Find found no slot of this block
      if (s[i].ref == kTombstone && tombstones_ > 0) --tombstones_;
      Store(s[i].count, 1);
      Store(s[i].ref, ref.bits());  // the entry exists from this store on
      ++used_;
      ++refs_;
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
  Slot* s = Find(ref);
  if (s == nullptr) return false;
  if (s->count > 1) {
    Store(s->count, s->count - 1);
  } else {
    Store(s->ref, kTombstone);
    if (used_ > 0) --used_;
    ++tombstones_;
    PublishCounters();
  }
  if (refs_ > 0) --refs_;
  return true;
}

absl::Status Ledger::SetCount(shm::Ref ref, uint64_t count) {
  count = std::min(count, kMaxCount);
  uint64_t have = Count(ref);
  if (have == count) return absl::OkStatus();
  if (count == 0) {
    Slot* s = Find(ref);
    Store(s->ref, kTombstone);
    if (used_ > 0) --used_;
    ++tombstones_;
    refs_ -= std::min(refs_, have);
    PublishCounters();
    return absl::OkStatus();
  }
  if (have == 0) {
    if (absl::Status s = Add(ref); !s.ok()) return s;
    have = 1;
  }
  Slot* s = Find(ref);
  Store(s->count, count);
  refs_ = refs_ - std::min(refs_, have) + count;
  return absl::OkStatus();
}

std::vector<LedgerEntry> Ledger::Entries() const {
  std::vector<LedgerEntry> out;
  out.reserve(used_);
  Slot* s = slots();
  for (uint64_t i = 0; i < capacity_; ++i) {
    if (IsRef(s[i].ref)) {
      uint64_t n = s[i].count;
      if (n == 0 || n > kMaxCount) n = 1;  // damage: see Open
      out.push_back({shm::Ref::FromBits(s[i].ref), n});
    }
  }
  return out;
}

void Ledger::Unlink() { unlink(path_.c_str()); }

}  // namespace structd::server
