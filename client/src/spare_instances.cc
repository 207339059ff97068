#include "client/src/spare_instances.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <optional>
#include <utility>

#include "structd/shm/local_recycle.h"

namespace structd::client::internal {

SpareInstances::SpareInstances(AllocateFn allocate, ReleaseFn release, bool background,
                               GiveUpSlotFn give_up_slot)
    : allocate_(std::move(allocate)),
      release_(std::move(release)),
      give_up_slot_(std::move(give_up_slot)),
      background_(background) {}

SpareInstances::~SpareInstances() {
  {
    base::MutexLock lock(&mu_);
    stop_ = true;
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  (void)ReleaseAll();
}

SpareInstances::SpareState SpareInstances::Check(const shm::InstancePtr& p,
                                                 uint32_t type_index) {
  const shm::InstanceHeader& h = p.header();
  if (h.type_index.load(std::memory_order_acquire) != type_index ||
      (h.generation.load(std::memory_order_acquire) & shm::kGenerationMask) !=
          p.ref().generation_tag()) {
    return SpareState::kGone;
  }
  return h.refcount.load(std::memory_order_acquire) == 1 ? SpareState::kSpare
                                                         : SpareState::kDoubtful;
}

uint32_t SpareInstances::MaxTarget(uint64_t block_bytes) {
  const uint64_t by_bytes = kMaxStockBytes / std::max<uint64_t>(block_bytes, 1);
  return static_cast<uint32_t>(std::clamp<uint64_t>(by_bytes, 1, kMaxTarget));
}

bool SpareInstances::PopOne(Stock& stock, Spare* out, std::vector<Spare>& doubtful) {
  while (!stock.spares.empty()) {
    const Spare spare = stock.spares.back();
    stock.spares.pop_back();
    switch (Check(spare.p, stock.type.type_index)) {
      case SpareState::kSpare:
        *out = spare;
        return true;
      case SpareState::kDoubtful:
        doubtful.push_back(spare);
        break;
      case SpareState::kGone:
        break;
    }
  }
  return false;
}

bool SpareInstances::SetUp(Stock& stock, const Type& type, std::vector<Spare>& unwanted) {
  if (stock.type == type) return false;
  unwanted.insert(unwanted.end(), stock.spares.begin(), stock.spares.end());
  stock.spares.clear();
  stock.type = type;
  stock.target = std::min(kFirstTarget, MaxTarget(type.block_bytes()));
  ++stock.epoch;
  return true;
}

bool SpareInstances::TryTakeOne(uint32_t slot, shm::InstancePtr* out, uint32_t* held_in) {
  if (slot >= kSlots) return false;
  Stock& stock = stocks_[slot];
  std::vector<Spare> doubtful;
  Spare spare{shm::InstancePtr()};
  bool taken, low = false;
  {
    base::MutexLock lock(&stock.mu);
    taken = PopOne(stock, &spare, doubtful);
    if (taken) low = stock.spares.size() < stock.target / 2 && !stock.refill_asked;
  }
  if (taken) {
    *out = spare.p;
    if (held_in != nullptr) *held_in = spare.slot;
  }
  GiveBack(doubtful);
  if (low) MaybeAskRefill(slot);
  return taken;
}

absl::Status SpareInstances::Take(uint32_t slot, const Type& type, uint32_t count,
                                  std::vector<shm::InstancePtr>& out_ptrs,
                                  std::vector<uint32_t>* held_in) {
  std::vector<Spare> out;
  absl::Status s = TakeSpares(slot, type, count, out);
  for (const Spare& spare : out) {
    out_ptrs.push_back(spare.p);
    if (held_in != nullptr) held_in->push_back(spare.slot);
  }
  return s;
}

absl::Status SpareInstances::TakeSpares(uint32_t slot, const Type& type, uint32_t count,
                                        std::vector<Spare>& out) {
  Stock& stock = stocks_[slot];
  std::vector<Spare> unwanted, doubtful;
  const size_t already = out.size();
  uint32_t extra = 0;
  uint64_t epoch = 0;
  const uint64_t forgets = forgets_.load(std::memory_order_acquire);
  {
    base::MutexLock lock(&stock.mu);
    // Set up now, or emptied by ReleaseAll: start again at the first target.
    const bool fresh = SetUp(stock, type, unwanted) || stock.dormant;
    stock.dormant = false;
    if (stock.spares.size() >= count) {
      for (Spare p{shm::InstancePtr()}; count > 0 && PopOne(stock, &p, doubtful); --count) {
        out.push_back(p);
      }
    }
    if (count == 0) {
      // All from the stock.
    } else {
      const uint32_t max_target = MaxTarget(type.block_bytes());
      if (count <= max_target) {
        // Empty again: the stock is drained faster than it is refilled.
        if (!fresh) stock.target = std::min(max_target, stock.target * 2);
        extra = stock.target;
      }
      epoch = stock.epoch;
    }
  }
  GiveBack(unwanted);
  GiveBack(doubtful);
  if (count == 0) {
    MaybeAskRefill(slot);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Spare>> made = allocate_(type.token, count + extra);
  if (absl::IsResourceExhausted(made.status())) {
    // Maybe only because of spares: give them all back, ask for `count`.
    (void)ReleaseAll();
    extra = 0;
    made = allocate_(type.token, count);
  }
  if (!made.ok()) {
    // All or none: what came from the stock goes back to it.
    std::vector<Spare> taken(out.begin() + static_cast<long>(already), out.end());
    out.resize(already);
    Stash(slot, epoch, forgets, taken, unwanted);
    GiveBack(unwanted);
    return made.status();
  }
  out.insert(out.end(), made->begin(), made->begin() + count);
  made->erase(made->begin(), made->begin() + count);
  Stash(slot, epoch, forgets, *made, unwanted);
  GiveBack(unwanted);
  return absl::OkStatus();
}

bool SpareInstances::TryRecycle(uint32_t slot, uint64_t arena, const shm::InstancePtr& instance,
                                uint32_t held_in, uint64_t* slot_word) {
  if (slot >= kSlots) return false;
  Stock& stock = stocks_[slot];
  base::MutexLock lock(&stock.mu);
  // Up to twice the target: a program that drops many at once gives the
  // rest back through the daemon.
  if (!stock.type.recyclable || stock.dormant || stock.type.arena != arena ||
      stock.type.token.is_zero() ||
      stock.spares.size() >= 2 * size_t{stock.target}) {
    return false;
  }
  std::optional<shm::InstancePtr> next =
      shm::RecycleSoleInstance(instance, stock.type.type_index, stock.type.payload_bytes);
  if (!next) return false;
  // The slot names the instance now there before anyone can take it (and
  // send the slot's reference): a stale generation would be sent.
  if (slot_word != nullptr) {
    std::atomic_ref<uint64_t>(*slot_word).store(next->ref().bits(), std::memory_order_release);
  }
  stock.spares.push_back(Spare{*next, held_in});
  return true;
}

void SpareInstances::Stash(uint32_t slot, uint64_t epoch, uint64_t forgets,
                           std::vector<Spare>& made, std::vector<Spare>& unwanted) {
  if (made.empty()) return;
  Stock& stock = stocks_[slot];
  base::MutexLock lock(&stock.mu);
  // Under the stock's lock: Forget counts itself before it takes it.
  if (forgets_.load(std::memory_order_acquire) != forgets) {
    // Allocated in an arena that is gone: its refs may name blocks of the
    // new one, so they are neither stocked nor given back.
    made.clear();
    return;
  }
  if (stock.epoch == epoch) {
    stock.spares.insert(stock.spares.end(), made.begin(), made.end());
  } else {
    unwanted.insert(unwanted.end(), made.begin(), made.end());
  }
  made.clear();
}

void SpareInstances::GiveBack(std::vector<Spare>& spares) {
  if (spares.empty()) return;
  // Best effort: a reference not given back stays the session's (in its
  // ledger or slot) and is released at the session's end.
  std::vector<shm::Ref> refs;
  refs.reserve(spares.size());
  for (const Spare& spare : spares) {
    if (spare.slot != kNoSlot && give_up_slot_) give_up_slot_(spare.slot);
    refs.push_back(spare.p.ref());
  }
  (void)release_(refs);
  spares.clear();
}

size_t SpareInstances::ReleaseAll() {
  std::vector<Spare> refs;
  for (Stock& stock : stocks_) {
    base::MutexLock lock(&stock.mu);
    refs.insert(refs.end(), stock.spares.begin(), stock.spares.end());
    stock.spares.clear();
    stock.target = std::min(kFirstTarget, MaxTarget(stock.type.block_bytes()));
    stock.dormant = true;
    ++stock.epoch;  // a refill under way gives its instances back
  }
  const size_t n = refs.size();
  GiveBack(refs);
  return n;
}

void SpareInstances::Forget() {
  forgets_.fetch_add(1, std::memory_order_acq_rel);
  for (Stock& stock : stocks_) {
    base::MutexLock lock(&stock.mu);
    stock.spares.clear();
    stock.type = Type();
    ++stock.epoch;
  }
}

size_t SpareInstances::size() {
  size_t n = 0;
  for (Stock& stock : stocks_) {
    base::MutexLock lock(&stock.mu);
    n += stock.spares.size();
  }
  return n;
}

void SpareInstances::MaybeAskRefill(uint32_t slot) {
  if (!background_) return;
  Stock& stock = stocks_[slot];
  {
    base::MutexLock lock(&stock.mu);
    if (stock.refill_asked || stock.dormant || stock.type.token.is_zero() ||
        stock.spares.size() >= stock.target / 2 ||
        std::chrono::steady_clock::now() < stock.no_refill_before) {
      return;
    }
    stock.refill_asked = true;
  }
  base::MutexLock lock(&mu_);
  if (stop_) return;
  wanted_ |= uint64_t{1} << slot;
  if (!started_) {
    started_ = true;
    thread_ = std::thread([this] { Run(); });
  }
  wake_.Signal();
}

void SpareInstances::Refill(uint32_t slot) {
  Stock& stock = stocks_[slot];
  shm::TypeToken token;
  uint64_t epoch;
  uint32_t need;
  const uint64_t forgets = forgets_.load(std::memory_order_acquire);
  {
    base::MutexLock lock(&stock.mu);
    stock.refill_asked = false;
    if (stock.dormant) return;
    token = stock.type.token;
    epoch = stock.epoch;
    need = stock.spares.size() < stock.target
               ? stock.target - static_cast<uint32_t>(stock.spares.size())
               : 0;
  }
  if (token.is_zero() || need == 0) return;
  absl::StatusOr<std::vector<Spare>> made = allocate_(token, need);
  std::vector<Spare> unwanted;
  if (made.ok()) {
    Stash(slot, epoch, forgets, *made, unwanted);
  } else {
    base::MutexLock lock(&stock.mu);
    stock.no_refill_before = std::chrono::steady_clock::now() + kRefillBackoff;
  }
  GiveBack(unwanted);
}

void SpareInstances::Run() {
  while (true) {
    uint64_t wanted;
    {
      base::MutexLock lock(&mu_);
      while (!stop_ && wanted_ == 0) wake_.Wait(&mu_);
      if (stop_) return;
      wanted = std::exchange(wanted_, 0);
    }
    for (; wanted != 0; wanted &= wanted - 1) {
      Refill(static_cast<uint32_t>(std::countr_zero(wanted)));
    }
  }
}

}  // namespace structd::client::internal
