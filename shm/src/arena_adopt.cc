// Arena::Adopt: the owner's open after a restart, repairing what other
// processes may have done to the arena's files (arena.h, doc/recovery.md).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structd/base/posix.h"
#include "structd/shm/arena.h"

namespace structd::shm {

using base::ErrnoStatus;
using base::Fallocate;
using base::UniqueFd;

namespace {

bool ValidGeometry(uint64_t extent_size, uint32_t max_extents) {
  return extent_size >= kMinExtentSize && extent_size <= kMaxExtentSize &&
         extent_size % kSlabSize == 0 && max_extents > 0 && max_extents <= kMaxExtents;
}

// Puts extent `id` back to full size with a correct header. Pages that
// were cut off come back as zeros; nothing else in the file changes. A
// missing extent is recreated empty.
absl::Status RepairExtentFile(ArenaStorage& storage, uint32_t id, const ArenaIdentity& a,
                              std::vector<std::string>* repairs) {
  const ArenaFile file{static_cast<int32_t>(id)};
  const std::string path = storage.Name(file);
  const ExtentHeader want = ExpectedExtentHeader(a.epoch, a.extent_size, id);
  absl::StatusOr<UniqueFd> fd = storage.Open(file, Access::kReadWrite);
  if (absl::IsNotFound(fd.status())) {
    absl::StatusOr<PreparedFile> made = storage.Prepare(file, a.extent_size);
    if (!made.ok()) return made.status();
    if (pwrite(made->fd.get(), &want, sizeof want, 0) != static_cast<ssize_t>(sizeof want)) {
      return ErrnoStatus(errno, "arena: write the header of " + path);
    }
    if (absl::Status s = storage.Publish(file, *made); !s.ok()) return s;
    if (repairs != nullptr) {
      repairs->push_back(absl::StrFormat(
          "%s was missing: recreated empty, so instances there are lost", path));
    }
    return absl::OkStatus();
  }
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (fstat(fd->get(), &st) != 0) return ErrnoStatus(errno, "arena: stat " + path);
  if (!S_ISREG(st.st_mode)) {
    return absl::DataLossError(absl::StrCat("arena: ", path, " is not a regular file"));
  }
  ExtentHeader have{};
  bool header_ok = static_cast<uint64_t>(st.st_size) >= sizeof have &&
                   pread(fd->get(), &have, sizeof have, 0) == static_cast<ssize_t>(sizeof have) &&
                   ExtentHeaderMatches(have, a.epoch, a.extent_size, id);
  bool size_ok = static_cast<uint64_t>(st.st_size) == a.extent_size;
  if (header_ok && size_ok) return absl::OkStatus();
  if (!size_ok) {
    if (ftruncate(fd->get(), static_cast<off_t>(a.extent_size)) != 0) {
      return ErrnoStatus(errno, "arena: restore the size of " + path);
    }
    if (int err = Fallocate(fd->get(), static_cast<off_t>(a.extent_size)); err != 0) {
      return ErrnoStatus(err, "arena: back " + path);
    }
  }
  if (!header_ok &&
      pwrite(fd->get(), &want, sizeof want, 0) != static_cast<ssize_t>(sizeof want)) {
    return ErrnoStatus(errno, "arena: write the header of " + path);
  }
  if (repairs != nullptr) {
    repairs->push_back(absl::StrFormat(
        "%s was %s (%d bytes, expected %d)%s: restored; what was cut off reads as zeros, so "
        "instances there are lost",
        path, st.st_size == 0 && !header_ok ? "missing or empty" : "damaged", st.st_size,
        a.extent_size, header_ok ? "" : ", header rewritten"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Arena>> Arena::Adopt(const std::string& dir,
                                                    const ArenaIdentity& known,
                                                    std::vector<std::string>* repairs) {
  return Adopt(DirectoryStorage(dir), known, repairs);
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Adopt(std::unique_ptr<ArenaStorage> storage,
                                                    const ArenaIdentity& known,
                                                    std::vector<std::string>* repairs) {
  auto note = [&](std::string what) {
    if (repairs != nullptr) repairs->push_back(std::move(what));
  };
  const std::string path = storage->Name(ArenaFile{});
  UniqueFd fd;
  bool created = false;
  if (absl::StatusOr<UniqueFd> opened = storage->Open(ArenaFile{}, Access::kReadWrite);
      opened.ok()) {
    fd = std::move(*opened);
  } else if (!absl::IsNotFound(opened.status())) {
    return opened.status();
  } else {
    if (known.extent_size == 0) return opened.status();
    absl::StatusOr<PreparedFile> made = storage->Prepare(ArenaFile{}, sizeof(ArenaHeader));
    if (!made.ok()) return made.status();
    if (absl::Status s = storage->Publish(ArenaFile{}, *made); !s.ok()) return s;
    fd = std::move(made->fd);
    created = true;
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "arena: stat " + path);
  if (!S_ISREG(st.st_mode)) {
    return absl::DataLossError(absl::StrCat("arena: ", path, " is not a regular file"));
  }
  // What the header says now, read without mapping (it may be short).
  alignas(ArenaHeader) unsigned char raw[sizeof(ArenaHeader)] = {};
  ssize_t got = pread(fd.get(), raw, sizeof raw, 0);
  const auto* h = reinterpret_cast<const ArenaHeader*>(raw);
  bool full = got == static_cast<ssize_t>(sizeof raw) &&
              static_cast<uint64_t>(st.st_size) == sizeof(ArenaHeader);
  bool header_valid = got == static_cast<ssize_t>(sizeof raw) && h->magic == kArenaMagic &&
                      h->format_version == kFormatVersion &&
                      h->header_size == sizeof(ArenaHeader) &&
                      ValidGeometry(h->extent_size, h->max_extents) && h->epoch != 0;
  // The identity: the owner's records first, then the header, then extent 0.
  ArenaIdentity id = known;
  if (header_valid) {
    if (id.extent_size == 0) id.extent_size = h->extent_size;
    if (id.max_extents == 0) id.max_extents = h->max_extents;
    if (id.epoch == 0) id.epoch = h->epoch;
  }
  std::vector<uint32_t> files = storage->ExtentIds();
  if (id.extent_size == 0 || id.epoch == 0) {
    ExtentHeader e0{};
    absl::StatusOr<UniqueFd> f0 = storage->Open(ArenaFile{0}, Access::kReadOnly);
    if (f0.ok() && pread(f0->get(), &e0, sizeof e0, 0) == static_cast<ssize_t>(sizeof e0) &&
        e0.magic == kExtentMagic && e0.extent_id == 0 && e0.epoch != 0 &&
        ValidGeometry(e0.extent_size, 1)) {
      if (id.extent_size == 0) id.extent_size = e0.extent_size;
      if (id.epoch == 0) id.epoch = e0.epoch;
    }
  }
  if (id.max_extents == 0) {
    id.max_extents = std::max<uint32_t>(ArenaOptions{}.max_extents,
                                        files.empty() ? 1 : files.back() + 1);
  }
  if (!ValidGeometry(id.extent_size, id.max_extents) || id.epoch == 0) {
    return absl::DataLossError(absl::StrFormat(
        "arena: %s has a damaged header (extent_size %d, max_extents %d) and neither the "
        "daemon's records nor extent 0 say what it was; restore the directory from a backup",
        path, header_valid ? h->extent_size : 0, header_valid ? h->max_extents : 0));
  }
  bool matches = header_valid && full && h->epoch == id.epoch &&
                 h->extent_size == id.extent_size && h->max_extents == id.max_extents;
  if (!matches) {
    ArenaHeader fresh_storage;
    std::memset(static_cast<void*>(&fresh_storage), 0, sizeof fresh_storage);
    ArenaHeader& fresh = fresh_storage;
    fresh.magic = kArenaMagic;
    fresh.format_version = kFormatVersion;
    fresh.header_size = sizeof(ArenaHeader);
    fresh.epoch = id.epoch;
    fresh.extent_size = id.extent_size;
    fresh.max_extents = id.max_extents;
    // The count is recounted from the files below; the generation goes on.
    fresh.extent_count.store(0, std::memory_order_relaxed);
    fresh.created_unix_ms = header_valid ? h->created_unix_ms : 0;
    fresh.owner_generation.store(header_valid ? h->owner_generation.load() : 1,
                                 std::memory_order_relaxed);
    if (ftruncate(fd.get(), sizeof(ArenaHeader)) != 0 ||
        pwrite(fd.get(), &fresh, sizeof fresh, 0) != static_cast<ssize_t>(sizeof fresh)) {
      return ErrnoStatus(errno, "arena: rewrite " + path);
    }
    note(created ? absl::StrCat(path, " was missing: recreated from the daemon's records")
                 : absl::StrFormat(
                       "%s: header was damaged (%d bytes; magic %s, extent_size %d, max_extents "
                       "%d, epoch %s): rewritten from the daemon's records",
                       path, st.st_size, got >= 8 && h->magic == kArenaMagic ? "ok" : "bad",
                       got >= 32 ? h->extent_size : 0, got >= 40 ? h->max_extents : 0,
                       got >= 24 && h->epoch == id.epoch ? "ok" : "changed"));
  }
  // Every extent file up to the last one present is put back whole; a gap
  // (a removed file) becomes an empty extent, so later ids keep their data.
  uint32_t last = 0;
  bool any = false;
  for (uint32_t f : files) {
    if (f < id.max_extents) {
      last = f;
      any = true;
    } else {
      note(absl::StrFormat("%s: id %d is beyond max_extents %d; ignored",
                           storage->Name(ArenaFile{static_cast<int32_t>(f)}), f, id.max_extents));
    }
  }
  if (any) {
    for (uint32_t e = 0; e <= last; ++e) {
      if (absl::Status s = RepairExtentFile(*storage, e, id, repairs); !s.ok()) {
        return s;
      }
    }
  }
  fd = UniqueFd();
  absl::StatusOr<std::unique_ptr<Arena>> arena = Open(std::move(storage), Access::kReadWrite);
  if (!arena.ok()) return arena.status();
  absl::StatusOr<uint32_t> n = (*arena)->RecountExtents();
  if (!n.ok()) return n.status();
  (*arena)->header_->owner_generation.fetch_add(1, std::memory_order_acq_rel);
  return arena;
}

}  // namespace structd::shm
