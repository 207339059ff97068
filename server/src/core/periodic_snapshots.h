#ifndef STRUCTD_SERVER_CORE_PERIODIC_SNAPSHOTS_H_
#define STRUCTD_SERVER_CORE_PERIODIC_SNAPSHOTS_H_

// The daemon's own snapshots (doc/snapshots.md, "Periodic snapshots"):
// every `interval`, and once more when the daemon stops, each chosen
// channel is written to DIR/NAME@YYYYmmddTHHMMSS.mmmZ (the same directory
// structctl snapshot writes; '@' is never in a channel name) and all but
// the newest `keep` of that channel are removed. At start, a chosen
// channel the daemon does not have (its state directory was on a tmpfs
// that a reboot emptied) is restored from its newest snapshot.
//
// Thread safety: Start/Stop from one thread; the work runs on a thread of
// its own.

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "core/core.h"
#include "structd/base/mutex.h"

namespace structd::server {

struct PeriodicSnapshotOptions {
  std::string dir;                    // "" = off
  std::vector<std::string> channels;  // names; {"*"} = every channel
  std::chrono::seconds interval{3600};
  uint32_t keep = 24;                 // per channel, >= 1
  std::string daemon_version;
};

class PeriodicSnapshots {
 public:
  PeriodicSnapshots(Core* core, PeriodicSnapshotOptions options);
  ~PeriodicSnapshots();  // Stop()

  // Makes the directory (0700), restores chosen channels the daemon lacks
  // from their newest snapshots, removes what a killed daemon left half
  // written, and starts the timer. InvalidArgument if the directory
  // cannot be made.
  absl::Status Start();
  // Takes a last round of snapshots, then ends the thread. Idempotent.
  void Stop();

  // One round now (the timer's work; for tests and Stop). Returns how
  // many snapshots it wrote.
  int SnapshotAll();

  // "NAME@20261201T084321.123Z": the directory name of a snapshot of
  // `channel` taken at `unix_ms`.
  static std::string SnapshotName(const std::string& channel, uint64_t unix_ms);

 private:
  bool Chosen(const std::string& channel) const;
  absl::Status SnapshotOne(Channel& channel);
  void Prune(const std::string& channel);
  // The snapshots of each channel in the directory, oldest first.
  std::vector<std::string> SnapshotsOf(const std::string& channel) const;
  void RestoreMissing();
  // Restores the snapshot in `dir` as channel `name`.
  absl::Status RestoreFrom(const std::string& dir, const std::string& name);
  void Run();

  Core* core_;
  PeriodicSnapshotOptions options_;
  base::Mutex mu_;
  base::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_PERIODIC_SNAPSHOTS_H_
