#include "structd/shm/snapshot_fields.h"

#include <atomic>
#include <cstring>
#include <string>

#include "structd/shm/field.h"
#include "structd/shm/sync.h"

namespace structd::shm {

void CopyWords(const uint8_t* from, uint8_t* to, uint64_t size) {
  const auto* src = reinterpret_cast<const uint64_t*>(from);
  auto* dst = reinterpret_cast<uint64_t*>(to);
  for (uint64_t i = 0; i < size / 8; ++i) {
    // atomic_ref needs a non-const object; the load does not write.
    dst[i] = std::atomic_ref<uint64_t>(const_cast<uint64_t&>(src[i]))
                 .load(std::memory_order_relaxed);
  }
}

uint32_t CopyCompositeFields(const InstancePtr& live, uint8_t* copy, const Layout& layout) {
  uint32_t rewritten = 0;
  std::string value;
  for (const Field& f : layout.fields()) {
    if (f.kind() != FieldKind::kBytes && f.kind() != FieldKind::kString) continue;
    if (!BytesField(live.payload() + f.offset, f.spec.count).Read(value).ok()) continue;
    // The copy is this process's own memory: encoded directly as a fresh
    // field holding the value (state 0: no writer, version 0, slot 0
    // active; slot 0 = {length, bytes}; doc/arena-format.md). Not through
    // BytesField::Write, whose writer lock costs a getpid() per field
    // (half the time of a snapshot of millions of strings).
    uint8_t* field = copy + f.offset;
    std::memset(field, 0, f.size);
    const uint64_t length = value.size();
    std::memcpy(field + 8, &length, 8);
    std::memcpy(field + 16, value.data(), value.size());
    ++rewritten;
  }
  return rewritten;
}

uint32_t ForgetProcesses(const InstancePtr& instance, const Layout& layout) {
  uint32_t held = 0;
  for (const Field& f : layout.fields()) {
    uint8_t* p = instance.payload() + f.offset;
    switch (f.kind()) {
      case FieldKind::kMutex:
        if (MutexField::ForgetHolder(p)) ++held;
        break;
      case FieldKind::kCondition:
        ConditionField::ForgetWaiters(p);
        break;
      case FieldKind::kBytes:
      case FieldKind::kString:
        BytesField(p, f.spec.count).ForgetWriter();
        break;
      default:
        break;
    }
  }
  return held;
}

}  // namespace structd::shm
