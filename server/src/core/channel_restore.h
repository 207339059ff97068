#ifndef STRUCTD_SERVER_CORE_CHANNEL_RESTORE_H_
#define STRUCTD_SERVER_CORE_CHANNEL_RESTORE_H_

// One restore of a channel snapshot in progress (Core::BeginRestore, then
// Write for each piece of each file, then Core::FinishRestore). The arena
// files are built unnamed in the channel's storage and published only once
// every checksum matched; the channel directory gets its meta.toml last,
// so a daemon that dies in the middle finds a directory without one and
// removes it at start-up. An unfinished restore leaves nothing behind:
// its files go, its name and quota are released.
//
// Thread safety: none; one RPC drives it.

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "core/snapshot_format.h"
#include "structd/shm/arena_storage.h"

namespace structd::server {

class ChannelRestore {
 public:
  ~ChannelRestore();
  ChannelRestore(const ChannelRestore&) = delete;
  ChannelRestore& operator=(const ChannelRestore&) = delete;

  // Writes `data` at `offset` of the snapshot's file `file` (ranges never
  // sent read as zeros). InvalidArgument for a file the manifest does not
  // name or a range past its size; ResourceExhausted if the memory is not
  // there.
  absl::Status Write(const std::string& file, uint64_t offset, std::string_view data);

  const SnapshotManifest& manifest() const { return manifest_; }
  const std::string& name() const { return name_; }
  const std::string& id() const { return id_; }

 private:
  friend class Core;
  ChannelRestore() = default;

  SnapshotManifest manifest_;
  std::string id_;
  std::string name_;
  std::string dir_;
  uid_t uid_ = 0;
  std::unique_ptr<shm::ArenaStorage> storage_;
  std::map<std::string, shm::PreparedFile> prepared_;  // by snapshot file name
  std::string meta_text_;
  // Core's: releases the reserved name and the quota charged.
  std::function<void()> release_;
  bool finished_ = false;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_CHANNEL_RESTORE_H_
