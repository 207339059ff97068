#ifndef STRUCTD_CLIENT_BEHAVIOR_H_
#define STRUCTD_CLIENT_BEHAVIOR_H_

// Per-process behavior tables: the methods this process attaches to a type.
// A table is any copyable C++ type the program chooses, typically a struct
// of std::function or function pointers:
//
//   struct VectorMethods {
//     std::function<double(const Vector&)> norm;
//   };
//   ch->Bind<Vector>(VectorMethods{.norm = [](const Vector& v) { ... }});
//   absl::StatusOr<double> n = ch->Call(v, &VectorMethods::norm);
//
// Dispatch reads the type index from the instance's header and indexes this
// process's table array: O(1), lock-free, no allocation, no wrapper object
// per instance. Another process may bind a different table to the same
// type; each sees its own.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <typeindex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "structd/base/mutex.h"
#include "structd/shm/type_token.h"

namespace structd::client::internal {

// What Bind stored for one type.
struct BoundTable {
  std::type_index table_type;
  std::shared_ptr<const void> table;  // a const Table
  std::string key;
  shm::TypeToken token;
};

// type index -> BoundTable, in pages allocated on first Bind. Readers are
// lock-free (acquire loads); writers serialize on a mutex. Entries are
// immutable and live as long as the BehaviorTable (a rebind publishes a
// new entry and keeps the old one), so a reader never sees freed memory.
class BehaviorTable {
 public:
  static constexpr uint32_t kPageSize = 1024;
  static constexpr uint32_t kPages = 64;
  static constexpr uint32_t kMaxTypeIndex = kPageSize * kPages - 1;

  BehaviorTable() = default;
  ~BehaviorTable() {
    for (auto& p : pages_) delete[] p.load(std::memory_order_relaxed);
  }
  BehaviorTable(const BehaviorTable&) = delete;
  BehaviorTable& operator=(const BehaviorTable&) = delete;

  const BoundTable* Find(uint32_t type_index) const {
    if (type_index > kMaxTypeIndex) return nullptr;
    const std::atomic<const BoundTable*>* page =
        pages_[type_index / kPageSize].load(std::memory_order_acquire);
    if (page == nullptr) return nullptr;
    return page[type_index % kPageSize].load(std::memory_order_acquire);
  }

  // REQUIRES: type_index <= kMaxTypeIndex.
  void Set(uint32_t type_index, std::unique_ptr<BoundTable> entry) {
    base::MutexLock lock(&mu_);
    auto& slot = pages_[type_index / kPageSize];
    std::atomic<const BoundTable*>* page = slot.load(std::memory_order_relaxed);
    if (page == nullptr) {
      page = new std::atomic<const BoundTable*>[kPageSize]();
      slot.store(page, std::memory_order_release);
    }
    page[type_index % kPageSize].store(entry.get(), std::memory_order_release);
    entries_.push_back(std::move(entry));
  }

 private:
  std::array<std::atomic<std::atomic<const BoundTable*>*>, kPages> pages_{};
  base::Mutex mu_;
  std::vector<std::unique_ptr<BoundTable>> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_BEHAVIOR_H_
