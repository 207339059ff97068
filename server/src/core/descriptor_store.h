#ifndef STRUCTD_SERVER_CORE_DESCRIPTOR_STORE_H_
#define STRUCTD_SERVER_CORE_DESCRIPTOR_STORE_H_

// A keeper of descriptors that outlives the daemon: the memory of a
// channel with sealed arenas (shm::SealedMemoryStorage) exists only as
// memfds, so the daemon hands each to the store when it creates it and
// gets them back at its next start. In production the store is systemd's
// file descriptor store (server/src/systemd_descriptor_store.h); tests use
// an in-process one. doc/operations.md says what each deployment gets.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "structd/base/posix.h"
#include "structd/shm/arena_storage.h"
#include "structd/shm/format.h"

namespace structd::server {

class DescriptorStore {
 public:
  virtual ~DescriptorStore() = default;
  // Keeps a duplicate of `fd` under `name` (at most 255 printable
  // characters, no ':'). Best effort: a store that refuses it loses that
  // file at the next start, which recovery reports.
  virtual void Keep(const std::string& name, int fd) = 0;
  // Drops what is kept under `name`.
  virtual void Forget(const std::string& name) = 0;
  // The descriptors handed back at start whose names begin with `prefix`;
  // each is handed out once.
  virtual std::map<std::string, base::UniqueFd> Take(const std::string& prefix) = 0;
  // What was handed back at start and nobody took (Take) yet.
  virtual std::map<std::string, base::UniqueFd> TakeRest() = 0;
};

// The names a channel's arena files have in a store, and the keeper its
// SealedMemoryStorage reports to: "arena.CHANNEL_ID.header" and
// "arena.CHANNEL_ID.extent.N".
class ChannelArenaNames {
 public:
  explicit ChannelArenaNames(std::string channel_id);
  std::string Of(shm::ArenaFile file) const;
  std::string prefix() const { return prefix_; }
  // The files among `taken` (from DescriptorStore::Take(prefix())); names
  // that are not one of this channel's files are closed and listed in
  // `strays`.
  std::map<shm::ArenaFile, base::UniqueFd> Files(std::map<std::string, base::UniqueFd> taken,
                                                 std::vector<std::string>* strays) const;
  shm::SealedMemoryStorage::Keeper KeeperFor(std::shared_ptr<DescriptorStore> store) const;

 private:
  std::string prefix_;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_DESCRIPTOR_STORE_H_
