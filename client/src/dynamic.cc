#include "structd/client/dynamic.h"

#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "structd/client/channel.h"

namespace structd::client {

absl::StatusOr<const DynamicStruct*> DynamicStruct::Make(std::string key,
                                                         std::vector<shm::FieldSpec> fields) {
  absl::StatusOr<shm::Layout> layout = shm::Layout::Compute(std::move(fields));
  if (!layout.ok()) {
    return absl::Status(layout.status().code(),
                        absl::StrCat("type '", key, "': ", layout.status().message()));
  }
  // Interned for the life of the program: views point at their type, and
  // each distinct type takes one of the program's 64 type slots.
  static std::mutex mu;
  static auto* interned =
      new std::map<std::pair<std::string, std::string>, std::unique_ptr<DynamicStruct>>();
  std::lock_guard<std::mutex> lock(mu);
  auto [it, inserted] = interned->try_emplace({key, layout->canonical()});
  if (inserted) {
    it->second.reset(new DynamicStruct(std::move(key), std::move(*layout),
                                       internal::NextFastTypeSlot()));
  }
  return it->second.get();
}

}  // namespace structd::client
