#include "structd/shm/session_record.h"

#include <atomic>
#include <climits>
#include <new>

#include "absl/strings/str_format.h"
#include "futex.h"

namespace structd::shm {
namespace {

template <typename T>
std::atomic_ref<T> A(T& word) {
  return std::atomic_ref<T>(word);
}

constexpr size_t kLanesOffset = sizeof(SessionRecordHeader);
constexpr size_t kSlotsOffset = kLanesOffset + kRecordLanes * sizeof(MoveLane);
constexpr size_t kMarksOffset = kSlotsOffset + kRecordSlots * sizeof(uint64_t);
constexpr size_t kBytes = kMarksOffset + kRecordSlots * sizeof(uint32_t);

}  // namespace

std::vector<FieldSpec> SessionRecord::LayoutFields() {
  return {
      FieldSpec::Scalar("gate", FieldKind::kU32),
      FieldSpec::Scalar("tag", FieldKind::kU32),
      FieldSpec::Scalar("lane_count", FieldKind::kU32),
      FieldSpec::Scalar("slot_count", FieldKind::kU32),
      FieldSpec::Array("pad", FieldKind::kU8, 48),
      FieldSpec::Array("lanes", FieldKind::kU64, 3 * kRecordLanes),
      FieldSpec::Array("slots", FieldKind::kU64, kRecordSlots),
      FieldSpec::Array("marks", FieldKind::kU32, kRecordSlots),
  };
}

std::string SessionRecord::TypeKey() { return absl::StrFormat("structd.session/%u", kRecordSlots); }

size_t SessionRecord::Bytes() { return kBytes; }

absl::Status SessionRecord::Format(void* mem, size_t bytes, uint32_t tag) {
  if (bytes < kBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a session record takes %u bytes; %u given", kBytes, bytes));
  }
  auto* header = static_cast<SessionRecordHeader*>(mem);
  A(header->tag).store(tag, std::memory_order_relaxed);
  A(header->lane_count).store(kRecordLanes, std::memory_order_relaxed);
  A(header->slot_count).store(kRecordSlots, std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<SessionRecord> SessionRecord::Attach(void* mem, size_t bytes) {
  if (bytes < kBytes) {
    return absl::DataLossError(
        absl::StrFormat("%u bytes cannot hold a session record (%u)", bytes, kBytes));
  }
  auto* header = static_cast<SessionRecordHeader*>(mem);
  const uint32_t lanes = A(header->lane_count).load(std::memory_order_acquire);
  const uint32_t slots = A(header->slot_count).load(std::memory_order_acquire);
  if (lanes != kRecordLanes || slots != kRecordSlots) {
    return absl::DataLossError(absl::StrFormat(
        "the session record says %u lanes and %u slots, not %u and %u: a member overwrote it",
        lanes, slots, kRecordLanes, kRecordSlots));
  }
  auto* base = static_cast<uint8_t*>(mem);
  return SessionRecord(header, reinterpret_cast<MoveLane*>(base + kLanesOffset),
                       reinterpret_cast<uint64_t*>(base + kSlotsOffset),
                       reinterpret_cast<uint32_t*>(base + kMarksOffset));
}

void SessionRecord::CloseGate() const { A(header_->gate).store(1, std::memory_order_seq_cst); }

void SessionRecord::OpenGate() const {
  A(header_->gate).store(0, std::memory_order_seq_cst);
  internal::FutexWake(&header_->gate, INT_MAX);
}

bool SessionRecord::LaneBusy(uint32_t i) const {
  return A(lane(i)->op).load(std::memory_order_seq_cst) != 0;
}

}  // namespace structd::shm
