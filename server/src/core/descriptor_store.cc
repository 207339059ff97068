#include "core/descriptor_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace structd::server {

ChannelArenaNames::ChannelArenaNames(std::string channel_id)
    : prefix_(absl::StrCat("arena.", channel_id, ".")) {}

std::string ChannelArenaNames::Of(shm::ArenaFile file) const {
  return file.is_header() ? absl::StrCat(prefix_, "header")
                          : absl::StrCat(prefix_, "extent.", file.extent);
}

std::map<shm::ArenaFile, base::UniqueFd> ChannelArenaNames::Files(
    std::map<std::string, base::UniqueFd> taken, std::vector<std::string>* strays) const {
  std::map<shm::ArenaFile, base::UniqueFd> files;
  for (auto& [name, fd] : taken) {
    std::string_view rest = std::string_view(name).substr(
        name.starts_with(prefix_) ? prefix_.size() : name.size());
    uint32_t id = 0;
    if (rest == "header") {
      files[shm::ArenaFile{}] = std::move(fd);
    } else if (rest.starts_with("extent.") && absl::SimpleAtoi(absl::string_view(rest.data() + 7, rest.size() - 7), &id) &&
               id < shm::kMaxExtents && Of(shm::ArenaFile{static_cast<int32_t>(id)}) == name) {
      files[shm::ArenaFile{static_cast<int32_t>(id)}] = std::move(fd);
    } else if (strays != nullptr) {
      strays->push_back(name);
    }
  }
  return files;
}

shm::SealedMemoryStorage::Keeper ChannelArenaNames::KeeperFor(
    std::shared_ptr<DescriptorStore> store) const {
  ChannelArenaNames names = *this;
  return {[store, names](shm::ArenaFile file, int fd) { store->Keep(names.Of(file), fd); },
          [store, names](shm::ArenaFile file) { store->Forget(names.Of(file)); }};
}

}  // namespace structd::server
