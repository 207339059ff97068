// Channel: copying it for a snapshot, and what a restored copy needs
// before anyone uses it. doc/snapshots.md.

#include <sys/mman.h>

#include <cstring>
#include <fstream>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/channel.h"
#include "structd/shm/snapshot_fields.h"
#include "structd/shm/walk.h"

namespace structd::server {
namespace {

// MemAvailable of /proc/meminfo, in bytes; 0 if unknown.
uint64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

}  // namespace

void UnmapImageMemory::operator()(uint8_t* p) const { munmap(p, size); }

absl::StatusOr<ChannelImage> Channel::CaptureImage() const {
  base::MutexLock lock(&mu_);
  if (absl::Status s = UsableLocked(); !s.ok()) return s;
  ChannelImage image;
  image.meta = store_->meta();
  image.arena_format_version = arena_->format_version();
  image.extent_count = arena_->extent_count();
  image.identity = arena_->identity();
  image.live_instances = allocator_->Stats().live_instances;
  const uint64_t total = sizeof(shm::ArenaHeader) + image.extent_count * arena_->extent_size();
  const uint64_t available = MemAvailableBytes();
  if (available != 0 && total > available) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "channel '%s': a snapshot copies the arena (%d bytes) into the daemon's memory first, "
        "and the host has %d bytes available; free memory, or drop what the channel no "
        "longer needs",
        name_, total, available));
  }
  auto add = [&](std::string name, const uint8_t* from, uint64_t size) -> absl::Status {
    ChannelImage::File f;
    f.name = std::move(name);
    f.size = size;
    void* memory = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (memory != MAP_FAILED) {
      f.bytes = std::unique_ptr<uint8_t[], UnmapImageMemory>(static_cast<uint8_t*>(memory),
                                                                UnmapImageMemory{size});
    }
    if (f.bytes == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "channel '", name_, "': no memory for the snapshot's copy of ", f.name, " (", size,
          " bytes); free memory and try again"));
    }
    shm::CopyWords(from, f.bytes.get(), size);
    image.files.push_back(std::move(f));
    return absl::OkStatus();
  };
  if (absl::Status s = add(std::string(shm::kArenaHeaderFile),
                           reinterpret_cast<const uint8_t*>(&arena_->header()),
                           sizeof(shm::ArenaHeader));
      !s.ok()) {
    return s;
  }
  for (uint32_t id = 0; id < image.extent_count; ++id) {
    absl::StatusOr<uint8_t*> base = arena_->ExtentBase(id);
    if (!base.ok()) return base.status();
    if (absl::Status s = add(absl::StrCat("extent.", id), *base, arena_->extent_size());
        !s.ok()) {
      return s;
    }
  }
  // The raw copy can hold a bytes field's state and slots from different
  // moments: rewrite each from a torn-free read of the live field.
  shm::ForEachInstance(*arena_, [&](const shm::InstancePtr& inst) {
    const RegisteredType* t = registry_.FindByIndex(inst.type_index());
    if (t == nullptr || !inst.Fits(t->layout.size())) return true;  // restore repairs
    const uint32_t extent = inst.ref().extent_id();
    if (extent >= image.extent_count) return true;
    absl::StatusOr<uint8_t*> base = arena_->ExtentBase(extent);
    if (!base.ok()) return true;
    uint8_t* copy = image.files[1 + extent].bytes.get() + (inst.payload() - *base);
    image.composite_fields += shm::CopyCompositeFields(inst, copy, t->layout);
    return true;
  });
  if (absl::Status s = UsableLocked(); !s.ok()) return s;  // a file cut under the copy
  return image;
}

uint32_t Channel::ForgetProcesses() {
  base::MutexLock lock(&mu_);
  if (arena_ == nullptr) return 0;
  uint32_t held = 0;
  shm::ForEachInstance(*arena_, [&](const shm::InstancePtr& inst) {
    const RegisteredType* t = registry_.FindByIndex(inst.type_index());
    if (t != nullptr && inst.Fits(t->layout.size())) held += shm::ForgetProcesses(inst, t->layout);
    return true;
  });
  return held;
}

}  // namespace structd::server
