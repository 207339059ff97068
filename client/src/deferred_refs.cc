#include "client/src/deferred_refs.h"

#include <utility>

namespace structd::client::internal {
namespace {

// Statuses after which what was sent is gone anyway (the session ended and
// the daemon released everything it held, or the channel was dropped).
bool Dropped(const absl::Status& s) {
  return s.ok() || absl::IsFailedPrecondition(s) || absl::IsNotFound(s) ||
         absl::IsInvalidArgument(s) || absl::IsPermissionDenied(s);
}

// How long the thread lets operations gather before a flush, and waits
// after a failed one.
constexpr std::chrono::microseconds kGather{200};
constexpr std::chrono::milliseconds kRetryAfter{50};

// Applies `refs` with `apply`; a batch refused as a whole for one bad ref
// (calls are all or none) is applied one by one, so the others still
// count. On a failure to keep (see Apply), `refs` is left holding exactly
// what was not applied.
absl::Status ApplyAll(const DeferredRefs::Apply& apply, std::vector<shm::Ref>& refs) {
  if (refs.empty()) return absl::OkStatus();
  absl::Status s = apply(refs);
  if (s.ok() || !Dropped(s) || refs.size() == 1) return s;
  absl::Status first = absl::OkStatus();
  for (size_t i = 0; i < refs.size(); ++i) {
    absl::Status one = apply({refs[i]});
    if (!Dropped(one)) {  // the daemon went away meanwhile
      refs.erase(refs.begin(), refs.begin() + static_cast<std::ptrdiff_t>(i));
      return one;
    }
    if (first.ok()) first = one;
  }
  return first;
}

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
  return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
}

DeferredRefs::DeferredRefs(Apply retain, Apply release, bool background)
    : retain_(std::move(retain)),
      release_(std::move(release)),
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

DeferredRefs::ThreadBuffer& DeferredRefs::Mine() {
  // The buffers this thread used lately, newest first. An entry of a queue
  // that is gone is never matched (ids are not reused) and ages out.
  struct Entry {
    uint64_t queue;
    std::shared_ptr<ThreadBuffer> buffer;
  };
  thread_local std::vector<Entry> recent;
  for (size_t i = 0; i < recent.size(); ++i) {
    if (recent[i].queue == id_) {
      if (i != 0) std::swap(recent[0], recent[i]);
      return *recent[0].buffer;
    }
  }
  auto buffer = std::make_shared<ThreadBuffer>();
  {
    base::MutexLock lock(&mu_);
    buffers_.push_back(buffer);
  }
  recent.insert(recent.begin(), Entry{id_, buffer});
  if (recent.size() > 8) recent.pop_back();
  return *buffer;
}

void DeferredRefs::Enqueue(shm::Ref ref, bool retain) {
  ThreadBuffer& mine = Mine();
  Ring& ring = retain ? mine.retains : mine.releases;
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
  for (const auto& b : buffers_) {
    if (b->retains.size() != 0 || b->releases.size() != 0) return false;
  }
  return true;
}

size_t DeferredRefs::pending() {
  base::MutexLock lock(&mu_);
  size_t n = carried_.load(std::memory_order_acquire);
  for (const auto& b : buffers_) n += b->retains.size() + b->releases.size();
  return n;
}

absl::Status DeferredRefs::Flush() {
  base::MutexLock flushing(&flush_mu_);
  std::vector<std::shared_ptr<ThreadBuffer>> buffers;
  {
    base::MutexLock lock(&mu_);
    // A buffer only this queue holds belongs to a thread that is gone.
    std::erase_if(buffers_, [](const std::shared_ptr<ThreadBuffer>& b) {
      return b.use_count() == 1 && b->retains.size() == 0 && b->releases.size() == 0;
    });
    buffers = buffers_;
  }
  std::vector<shm::Ref> retains = std::move(carried_retains_);
  std::vector<shm::Ref> releases = std::move(carried_releases_);
  carried_retains_.clear();
  carried_releases_.clear();
  carried_.store(0, std::memory_order_release);
  // Releases first, then retains: a retain that happened before a release
  // taken here (on any thread) is in its ring by then (see the header).
  for (const auto& b : buffers) b->releases.DrainInto(releases);
  for (const auto& b : buffers) b->retains.DrainInto(retains);
  if (retains.empty() && releases.empty()) return absl::OkStatus();
  auto carry = [&] {
    carried_retains_ = std::move(retains);
    carried_releases_ = std::move(releases);
    carried_.store(carried_retains_.size() + carried_releases_.size(),
                   std::memory_order_release);
  };
  // Every retain before any release (see the header).
  absl::Status s = ApplyAll(retain_, retains);
  if (!Dropped(s)) {
    carry();
    return s;
  }
  retains.clear();
  absl::Status r = ApplyAll(release_, releases);
  if (!Dropped(r)) {
    carry();
    return r;
  }
  return s.ok() ? r : s;
}

void DeferredRefs::Run() {
  while (true) {
    {
      base::MutexLock lock(&mu_);
      // A producer that pushes into an empty ring signals under mu_, so
      // no push is missed between this check and the wait.
      while (!stop_ && NothingQueuedLocked()) wake_.Wait(&mu_);
      if (stop_) return;
      // Let more operations gather into this batch.
      wake_.WaitFor(&mu_, kGather);
      if (stop_) return;
    }
    if (!Dropped(Flush())) {
      base::MutexLock lock(&mu_);
      if (!stop_) wake_.WaitFor(&mu_, kRetryAfter);
    }
  }
}

}  // namespace structd::client::internal
