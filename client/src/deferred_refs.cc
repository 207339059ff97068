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

DeferredRefs::DeferredRefs(Apply retain, Apply release, bool background)
    : retain_(std::move(retain)), release_(std::move(release)), background_(background) {}

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

void DeferredRefs::Enqueue(shm::Ref ref, bool retain) {
  bool full = false;
  {
    base::MutexLock lock(&mu_);
    std::vector<shm::Ref>& queue = retain ? retains_ : releases_;
    bool was_empty = retains_.empty() && releases_.empty();
    queue.push_back(ref);
    full = retains_.size() + releases_.size() >= kMaxPending;
    if (!started_ && !stop_ && background_) {
      started_ = true;
      thread_ = std::thread([this] { Run(); });
    } else if (was_empty) {
      wake_.Signal();
    }
  }
  if (full) (void)Flush();
}

size_t DeferredRefs::pending() const {
  base::MutexLock lock(&mu_);
  return retains_.size() + releases_.size();
}

absl::Status DeferredRefs::Flush() {
  base::MutexLock flushing(&flush_mu_);
  std::vector<shm::Ref> retains = std::move(spare_retains_);
  std::vector<shm::Ref> releases = std::move(spare_releases_);
  retains.clear();
  releases.clear();
  {
    base::MutexLock lock(&mu_);
    retains.swap(retains_);
    releases.swap(releases_);
  }
  // What this flush took is given back for its capacity however it ends.
  struct KeepSpares {
    DeferredRefs* q;
    std::vector<shm::Ref>& retains;
    std::vector<shm::Ref>& releases;
    ~KeepSpares() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      q->spare_retains_ = std::move(retains);
      q->spare_releases_ = std::move(releases);
    }
  } keep{this, retains, releases};
  if (retains.empty() && releases.empty()) return absl::OkStatus();
  // Every retain before any release (see the header).
  absl::Status s = ApplyAll(retain_, retains);
  if (!Dropped(s)) {
    base::MutexLock lock(&mu_);
    retains_.insert(retains_.begin(), retains.begin(), retains.end());
    releases_.insert(releases_.begin(), releases.begin(), releases.end());
    return s;
  }
  absl::Status r = ApplyAll(release_, releases);
  if (!Dropped(r)) {
    base::MutexLock lock(&mu_);
    releases_.insert(releases_.begin(), releases.begin(), releases.end());
    return r;
  }
  return s.ok() ? r : s;
}

void DeferredRefs::Run() {
  while (true) {
    {
      base::MutexLock lock(&mu_);
      while (!stop_ && retains_.empty() && releases_.empty()) wake_.Wait(&mu_);
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
