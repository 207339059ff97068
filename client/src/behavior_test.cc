// The per-process behavior table: O(1) lookup by type index, pages made on
// first bind, rebinding keeps earlier entries alive for concurrent readers.

#include "structd/client/behavior.h"

#include <thread>

#include <gtest/gtest.h>

namespace structd::client::internal {
namespace {

std::unique_ptr<BoundTable> Entry(int value, const std::string& key) {
  return std::make_unique<BoundTable>(BoundTable{
      std::type_index(typeid(int)), std::make_shared<const int>(value), key, {}});
}

TEST(BehaviorTableTest, FindsWhatWasSetAndNothingElse) {
  BehaviorTable table;
  EXPECT_EQ(table.Find(1), nullptr);
  table.Set(1, Entry(10, "A"));
  table.Set(5000, Entry(50, "B"));  // another page
  table.Set(BehaviorTable::kMaxTypeIndex, Entry(99, "Z"));
  ASSERT_NE(table.Find(1), nullptr);
  EXPECT_EQ(*static_cast<const int*>(table.Find(1)->table.get()), 10);
  EXPECT_EQ(table.Find(5000)->key, "B");
  EXPECT_EQ(table.Find(BehaviorTable::kMaxTypeIndex)->key, "Z");
  EXPECT_EQ(table.Find(2), nullptr);
  EXPECT_EQ(table.Find(4999), nullptr);
  EXPECT_EQ(table.Find(BehaviorTable::kMaxTypeIndex + 1), nullptr);
  EXPECT_EQ(table.Find(~0u), nullptr);
}

TEST(BehaviorTableTest, ReadersNeverSeeAFreedEntryWhileRebinding) {
  BehaviorTable table;
  table.Set(3, Entry(0, "T"));
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0};
  std::thread reader([&] {
    while (!stop.load()) {
      const BoundTable* e = table.Find(3);
      // Entries are immutable and kept: the value is one that was bound.
      int v = *static_cast<const int*>(e->table.get());
      if (v < 0 || v > 1000) std::abort();
      reads.fetch_add(1);
    }
  });
  while (reads.load() == 0) std::this_thread::yield();  // the reader is running
  for (int i = 1; i <= 1000; ++i) table.Set(3, Entry(i, "T"));
  long after = reads.load();
  while (reads.load() < after + 100) std::this_thread::yield();
  stop.store(true);
  reader.join();
  EXPECT_EQ(*static_cast<const int*>(table.Find(3)->table.get()), 1000);
}

}  // namespace
}  // namespace structd::client::internal
