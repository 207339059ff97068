#ifndef STRUCTD_SHM_MAPPING_GUARD_H_
#define STRUCTD_SHM_MAPPING_GUARD_H_

// Survives SIGBUS on shared mappings whose file another process shrank.
//
// Any process that can open a file the daemon maps can truncate it; the
// next access to a page past the new end raises SIGBUS, which would kill
// the daemon and every channel with it. A process that installs the guard
// (the daemon does, at start) registers each such mapping; a SIGBUS inside
// a registered mapping replaces the whole mapping with private zero pages
// (the way Wayland compositors guard client buffers), records the damage
// in the owner's DamageFlag, and lets the faulting instruction run again.
// The owner then fails its requests with DATA_LOSS instead of dying. A
// SIGBUS anywhere else is passed on (the process dies as it would have).
//
// Thread safety: every function may be called from any thread; the signal
// handler only reads the registry and uses async-signal-safe calls.

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace structd::shm {

// Set by the handler when a mapping of its owner was damaged. The owner
// keeps it alive for as long as any of its mappings is registered.
struct DamageFlag {
  // 0 = intact; otherwise 1 + the tag of the first damaged mapping.
  std::atomic<uint64_t> first_tag_plus_one{0};
  bool damaged() const { return first_tag_plus_one.load(std::memory_order_acquire) != 0; }
  uint64_t tag() const { return first_tag_plus_one.load(std::memory_order_acquire) - 1; }
};

// Installs the process-wide SIGBUS handler (idempotent). Without it,
// registration still works but a SIGBUS kills the process as usual.
void InstallSigbusGuard();
bool SigbusGuardInstalled();

// One registered mapping; unregisters on destruction. Destroy it before
// the memory is unmapped. Move-only.
class GuardedMapping {
 public:
  GuardedMapping() = default;
  // `tag` names the mapping to its owner (an extent id, say); below 2^63.
  GuardedMapping(void* base, size_t length, DamageFlag* flag, uint64_t tag);
  ~GuardedMapping();
  GuardedMapping(GuardedMapping&& o) noexcept : slot_(o.slot_) { o.slot_ = -1; }
  GuardedMapping& operator=(GuardedMapping&& o) noexcept;
  GuardedMapping(const GuardedMapping&) = delete;
  GuardedMapping& operator=(const GuardedMapping&) = delete;
  // False if the registry was full (the mapping is then unguarded).
  bool registered() const { return slot_ >= 0; }

 private:
  long slot_ = -1;
};

}  // namespace structd::shm

#endif  // STRUCTD_SHM_MAPPING_GUARD_H_
