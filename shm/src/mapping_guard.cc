#include "structd/shm/mapping_guard.h"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>

namespace structd::shm {
namespace {

// The registry is a fixed array, so the handler never allocates or locks.
// 2^18 mappings: 256 channels of 1,024 extents. A slot is free while its
// base is 0; it is claimed with a CAS on the base, then filled.
constexpr long kSlots = 1l << 18;

struct Slot {
  std::atomic<uintptr_t> base{0};
  std::atomic<size_t> length{0};  // 0 while being filled or emptied
  std::atomic<DamageFlag*> flag{nullptr};
  std::atomic<uint64_t> tag{0};
};

Slot g_slots[kSlots];
std::atomic<long> g_high{0};  // slots [0, g_high) may be in use
std::atomic<bool> g_installed{false};
struct sigaction g_previous;

void PassOn(int sig, siginfo_t* info, void* context) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction != nullptr) {
      g_previous.sa_sigaction(sig, info, context);
      return;
    }
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the access faults again and
  // the process dies of SIGBUS as it would have without the guard.
  signal(sig, SIG_DFL);
}

void OnSigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  const long high = g_high.load(std::memory_order_acquire);
  for (long i = 0; i < high; ++i) {
    Slot& s = g_slots[i];
    uintptr_t base = s.base.load(std::memory_order_acquire);
    size_t length = s.length.load(std::memory_order_acquire);
    if (base == 0 || length == 0 || addr < base || addr - base >= length) continue;
    // Zero pages over the whole mapping: no later access faults again, and
    // nothing written from now on reaches the (damaged) file.
    void* p = mmap(reinterpret_cast<void*>(base), length, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) break;
    if (DamageFlag* flag = s.flag.load(std::memory_order_acquire)) {
      uint64_t expected = 0;
      flag->first_tag_plus_one.compare_exchange_strong(
          expected, s.tag.load(std::memory_order_relaxed) + 1);
    }
    return;  // the faulting access runs again, on zero pages
  }
  PassOn(sig, info, context);
}

}  // namespace

void InstallSigbusGuard() {
  if (g_installed.exchange(true)) return;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &g_previous);
}

bool SigbusGuardInstalled() { return g_installed.load(); }

GuardedMapping::GuardedMapping(void* base, size_t length, DamageFlag* flag, uint64_t tag) {
  if (base == nullptr || length == 0) return;
  for (long i = 0; i < kSlots; ++i) {
    uintptr_t expected = 0;
    // A claimed slot has a base but no length until it is filled, so the
    // handler ignores it meanwhile.
    if (!g_slots[i].base.compare_exchange_strong(expected, reinterpret_cast<uintptr_t>(base))) {
      continue;
    }
    g_slots[i].flag.store(flag, std::memory_order_relaxed);
    g_slots[i].tag.store(tag, std::memory_order_relaxed);
    g_slots[i].length.store(length, std::memory_order_release);
    long high = g_high.load();
    while (high < i + 1 && !g_high.compare_exchange_weak(high, i + 1)) {
    }
    slot_ = i;
    return;
  }
}

GuardedMapping::~GuardedMapping() {
  if (slot_ < 0) return;
  Slot& s = g_slots[slot_];
  s.length.store(0, std::memory_order_release);
  s.flag.store(nullptr, std::memory_order_relaxed);
  s.base.store(0, std::memory_order_release);
}

GuardedMapping& GuardedMapping::operator=(GuardedMapping&& o) noexcept {
  if (this != &o) {
    this->~GuardedMapping();
    slot_ = o.slot_;
    o.slot_ = -1;
  }
  return *this;
}

}  // namespace structd::shm
