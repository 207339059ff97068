#include "client/src/deferred_refs.h"

#include <utility>

namespace structd::client::internal {
namespace {

// How long the thread lets operations gather before a flush, waits after
// a failed one, and sleeps at most when it has nothing (a push that lost
// the race with its wait is taken then).
constexpr std::chrono::microseconds kGather{200};
constexpr std::chrono::milliseconds kRetryAfter{50};
constexpr std::chrono::milliseconds kIdleBackstop{20};

}  // namespace

namespace {
std::atomic<uint64_t> next_queue_id{1};
}  // namespace

DeferredRefs::Ring::Ring() : push_chunk_(new Chunk), take_chunk_(push_chunk_) {}

DeferredRefs::Ring::~Ring() {
  for (Chunk* c = take_chunk_; c != nullptr;) {
    Chunk* next = c->next.load(std::memory_order_relaxed);
    delete c;
    c = next;
  }
}

void DeferredRefs::Ring::Push(shm::Ref ref, bool* was_empty) {
  const uint64_t h = head_.load(std::memory_order_relaxed);
  *was_empty = h == tail_.load(std::memory_order_acquire);
  if (h == push_base_ + Chunk::kSlots) {
    // Linked before any of its slots is published (the head store below).
    Chunk* fresh = new Chunk;
    push_chunk_->next.store(fresh, std::memory_order_release);
    push_chunk_ = fresh;
    push_base_ = h;
  }
  push_chunk_->slots[h - push_base_] = ref.bits();
  head_.store(h + 1, std::memory_order_release);
}

void DeferredRefs::Ring::DrainInto(std::vector<shm::Ref>& out) {
  const uint64_t t = tail_.load(std::memory_order_relaxed);
  const uint64_t h = head_.load(std::memory_order_acquire);
  for (uint64_t i = t; i < h; ++i) {
    if (i == take_base_ + Chunk::kSlots) {
      // Position i < head is published, so its chunk is linked; the one
      // left behind is older than the producer's.
      Chunk* next = take_chunk_->next.load(std::memory_order_acquire);
      delete take_chunk_;
      take_chunk_ = next;
      take_base_ = i;
    }
    out.push_back(shm::Ref::FromBits(take_chunk_->slots[i - take_base_]));
  }
  tail_.store(h, std::memory_order_release);
}

uint64_t DeferredRefs::Ring::size() const {
  // tail first: it only ever advances to a head already published.
  const uint64_t t = tail_.load(std::memory_order_acquire);
  return head_.load(std::memory_order_acquire) - t;
}

DeferredRefs::DeferredRefs(Apply retain, Apply release, std::function<size_t()> max_per_call,
                           bool background)
    : retain_(std::move(retain)),
      release_(std::move(release)),
      max_per_call_(std::move(max_per_call)),
      background_(background),
      id_(next_queue_id.fetch_add(1, std::memory_order_relaxed)) {}

DeferredRefs::~DeferredRefs() {
  {
    base::MutexLock lock(&mu_);
    stop_ = true;
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  (void)Flush();
}

void DeferredRefs::Retain(shm::Ref ref) { Enqueue(ref, true); }
void DeferredRefs::Release(shm::Ref ref) { Enqueue(ref, false); }

namespace {
// Set when this thread's thread_locals are destroyed: an Owned destroyed
// after that (itself thread_local, or static on the main thread) must not
// touch them. Trivially destructible, so readable until the thread ends.
thread_local bool tls_gone = false;
}  // namespace

DeferredRefs::ThreadBuffer* DeferredRefs::Mine() {
  // The buffers this thread used lately, newest first. An entry of a queue
  // that is gone is never matched (ids are not reused) and ages out.
  struct Entry {
    uint64_t queue;
    std::shared_ptr<ThreadBuffer> buffer;
  };
  struct Recent {
    std::vector<Entry> entries;
    ~Recent() { tls_gone = true; }
  };
  if (tls_gone) return nullptr;
  thread_local Recent recent;
  std::vector<Entry>& entries = recent.entries;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].queue == id_) {
      if (i != 0) std::swap(entries[0], entries[i]);
      return entries[0].buffer.get();
    }
  }
  auto buffer = std::make_shared<ThreadBuffer>();
  {
    base::MutexLock lock(&mu_);
    buffers_.push_back(buffer);
  }
  entries.insert(entries.begin(), Entry{id_, buffer});
  if (entries.size() > 8) entries.pop_back();
  return buffer.get();
}

void DeferredRefs::Enqueue(shm::Ref ref, bool retain) {
  ThreadBuffer* mine = Mine();
  if (mine == nullptr) {
    base::MutexLock lock(&mu_);
    (retain ? orphan_retains_ : orphan_releases_).push_back(ref);
    wake_.Signal();
    return;
  }
  Ring& ring = retain ? mine->retains : mine->releases;
  bool was_empty = false;
  ring.Push(ref, &was_empty);
  if (was_empty) {
    Wake();
  } else if (ring.size() > kMaxPending) {
    (void)Flush();  // the daemon falls behind: apply it on this thread
  }
}

void DeferredRefs::Wake() {
  base::MutexLock lock(&mu_);
  if (!started_ && !stop_ && background_) {
    started_ = true;
    thread_ = std::thread([this] { Run(); });
  }
  wake_.Signal();
}

bool DeferredRefs::NothingQueuedLocked() {
  if (carried_.load(std::memory_order_acquire) != 0) return false;
  if (!orphan_retains_.empty() || !orphan_releases_.empty()) return false;
  for (const auto& b : buffers_) {
    if (b->retains.size() != 0 || b->releases.size() != 0) return false;
  }
  return true;
}

size_t DeferredRefs::pending() {
  base::MutexLock lock(&mu_);
  size_t n = carried_.load(std::memory_order_acquire) + orphan_retains_.size() +
             orphan_releases_.size();
  for (const auto& b : buffers_) n += b->retains.size() + b->releases.size();
  return n;
}

absl::Status DeferredRefs::ApplyAll(const Apply& apply, std::vector<shm::Ref>& refs,
                                    bool retains) {
  const size_t per_call = std::max<size_t>(1, max_per_call_());
  std::vector<shm::Ref> chunk;
  // Keeps refs[from..] for a retry and says why.
  auto keep_from = [&](size_t from, absl::Status why) {
    refs.erase(refs.begin(), refs.begin() + static_cast<std::ptrdiff_t>(from));
    return why;
  };
  for (size_t begin = 0; begin < refs.size(); begin += per_call) {
    const size_t end = std::min(refs.size(), begin + per_call);
    chunk.assign(refs.begin() + static_cast<std::ptrdiff_t>(begin),
                 refs.begin() + static_cast<std::ptrdiff_t>(end));
    absl::Status s = apply(chunk);
    if (s.ok()) continue;
    if (absl::IsUnavailable(s) || (absl::IsAborted(s) && retains)) return keep_from(begin, s);
    if (absl::IsAborted(s)) continue;  // a release that may have happened: never again
    // Refused as a whole (all or none): one at a time, so the rest count.
    for (size_t i = begin; i < end && chunk.size() > 1; ++i) {
      absl::Status one = apply({refs[i]});
      if (absl::IsUnavailable(one) || (absl::IsAborted(one) && retains)) {
        return keep_from(i, one);
      }
    }
  }
  refs.clear();
  return absl::OkStatus();
}

absl::Status DeferredRefs::Flush() {
  base::MutexLock flushing(&flush_mu_);
  auto live_buffers = [&] {
    base::MutexLock lock(&mu_);
    // A buffer only this queue holds belongs to a thread that is gone.
    std::erase_if(buffers_, [](const std::shared_ptr<ThreadBuffer>& b) {
      return b.use_count() == 1 && b->retains.size() == 0 && b->releases.size() == 0;
    });
    return buffers_;
  };
  std::vector<shm::Ref> retains = std::move(carried_retains_);
  std::vector<shm::Ref> releases = std::move(carried_releases_);
  carried_retains_.clear();
  carried_releases_.clear();
  carried_.store(0, std::memory_order_release);
  // Releases first, then retains, each from a fresh list of buffers: a
  // retain that happened before a release taken here (on any thread, also
  // one whose buffer is new) is queued by the time the retains are read.
  for (const auto& b : live_buffers()) b->releases.DrainInto(releases);
  {
    base::MutexLock lock(&mu_);
    releases.insert(releases.end(), orphan_releases_.begin(), orphan_releases_.end());
    orphan_releases_.clear();
  }
  for (const auto& b : live_buffers()) b->retains.DrainInto(retains);
  {
    base::MutexLock lock(&mu_);
    retains.insert(retains.end(), orphan_retains_.begin(), orphan_retains_.end());
    orphan_retains_.clear();
  }
  if (retains.empty() && releases.empty()) return absl::OkStatus();
  // Every retain before any release (see the header).
  if (absl::Status s = ApplyAll(retain_, retains, /*retains=*/true); !s.ok()) {
    Carry(retains, releases);  // the releases too: they wait for the retains
    return s;
  }
  absl::Status r = ApplyAll(release_, releases, /*retains=*/false);
  Carry(retains, releases);
  return r;
}

void DeferredRefs::Carry(std::vector<shm::Ref>& retains, std::vector<shm::Ref>& releases) {
  carried_retains_ = std::move(retains);
  carried_releases_ = std::move(releases);
  carried_.store(carried_retains_.size() + carried_releases_.size(), std::memory_order_release);
}

void DeferredRefs::Run() {
  while (true) {
    {
      base::MutexLock lock(&mu_);
      // A producer that pushes into an empty ring signals under mu_; a
      // push racing the drain may not know it was first (it read the
      // consumer's position before the drain moved it), so the wait is
      // bounded too.
      while (!stop_ && NothingQueuedLocked()) wake_.WaitFor(&mu_, kIdleBackstop);
      if (stop_) return;
      // Let more operations gather into this batch.
      wake_.WaitFor(&mu_, kGather);
      if (stop_) return;
    }
    if (!Flush().ok()) {
      base::MutexLock lock(&mu_);
      if (!stop_) wake_.WaitFor(&mu_, kRetryAfter);
    }
  }
}

}  // namespace structd::client::internal
