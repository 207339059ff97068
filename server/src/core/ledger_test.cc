#include "core/ledger.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "testing/temp_dir.h"

namespace structd::server {
namespace {

using shm::Ref;

Ref R(uint32_t i) { return Ref::Make(i % 7, 4096 + 16 * i, i % 5); }

TEST(LedgerTest, AddRemoveAndCountWithMultiplicity) {
  structd::testing::TempDir dir;
  auto l = Ledger::Create(dir.Sub("l"), 42);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_TRUE((*l)->Add(R(1)).ok());
  ASSERT_TRUE((*l)->Add(R(1)).ok());
  ASSERT_TRUE((*l)->Add(R(2)).ok());
  EXPECT_EQ((*l)->size(), 3u);
  EXPECT_TRUE((*l)->Remove(R(1)));
  EXPECT_TRUE((*l)->Contains(R(1)));
  EXPECT_TRUE((*l)->Remove(R(1)));
  EXPECT_FALSE((*l)->Contains(R(1)));
  EXPECT_FALSE((*l)->Remove(R(1)));  // owned twice, released twice
  EXPECT_FALSE((*l)->Remove(R(3)));
  EXPECT_EQ((*l)->size(), 1u);
  EXPECT_EQ((*l)->session_tag(), 42u);
}

TEST(LedgerTest, GrowsAndSurvivesReopening) {
  structd::testing::TempDir dir;
  std::vector<Ref> added;
  {
    auto l = Ledger::Create(dir.Sub("l"), 7);
    ASSERT_TRUE(l.ok());
    for (uint32_t i = 0; i < 20000; ++i) {
      ASSERT_TRUE((*l)->Add(R(i)).ok());
      added.push_back(R(i));
    }
    for (uint32_t i = 0; i < 20000; i += 2) ASSERT_TRUE((*l)->Remove(R(i)));
  }
  // A restarted daemon reads the same file back.
  auto l = Ledger::Open(dir.Sub("l"));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ((*l)->size(), 10000u);
  std::vector<LedgerEntry> entries = (*l)->Entries();
  for (uint32_t i = 1; i < 20000; i += 2) {
    EXPECT_TRUE((*l)->Contains(R(i))) << i;
  }
  EXPECT_FALSE((*l)->Contains(R(0)));
  EXPECT_EQ(entries.size(), 10000u);
}

TEST(LedgerTest, DamagedFileIsDataLoss) {
  structd::testing::TempDir dir;
  {
    std::ofstream f(dir.Sub("bad"));
    f << std::string(200, 'x');
  }
  EXPECT_EQ(Ledger::Open(dir.Sub("bad")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(Ledger::Open(dir.Sub("missing")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(LedgerTest, TombstonesDoNotFillTheTable) {
  structd::testing::TempDir dir;
  auto l = Ledger::Create(dir.Sub("l"), 1);
  ASSERT_TRUE(l.ok());
  // Churn far more than the capacity: tombstones must be cleaned up by
  // rehashing, or lookups would never terminate.
  for (uint32_t i = 0; i < 100000; ++i) {
    ASSERT_TRUE((*l)->Add(R(i)).ok());
    ASSERT_TRUE((*l)->Remove(R(i)));
  }
  EXPECT_EQ((*l)->size(), 0u);
  EXPECT_FALSE((*l)->Contains(R(5)));
}

// Found by the hostile-state fault test: the live ledger read its capacity
// and counters back from the mapped file, so bytes written into the file
// while the daemon had it open sent probes outside the mapping.
TEST(LedgerTest, BytesWrittenIntoAnOpenLedgerCannotSteerItOutsideTheFile) {
  structd::testing::TempDir dir;
  auto l = Ledger::Create(dir.Sub("l"), 7);
  ASSERT_TRUE(l.ok());
  for (uint32_t i = 0; i < 40; ++i) ASSERT_TRUE((*l)->Add(R(i)).ok());
  {
    // Header: magic, session tag, capacity, used, tombstones.
    std::fstream f(dir.Sub("l"), std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t garbage[5] = {1, 2, uint64_t{1} << 62, ~uint64_t{0}, ~uint64_t{0}};
    f.write(reinterpret_cast<const char*>(garbage), sizeof garbage);
    // And every empty slot (16 bytes: ref, count) taken by junk.
    f.seekp(64);
    for (int i = 0; i < 128; ++i) {
      // Distinct blocks (slots are matched by block, not generation).
      uint64_t v = (uint64_t{0xdead} << 36) + (uint64_t(i) << 26);
      f.write(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  EXPECT_EQ((*l)->size(), 40u);
  EXPECT_EQ((*l)->session_tag(), 7u);
  EXPECT_FALSE((*l)->Contains(R(1000)));
  EXPECT_FALSE((*l)->Remove(R(1000)));
  // The table is full of junk: Add rehashes into a bigger file and goes on.
  ASSERT_TRUE((*l)->Add(R(1000)).ok());
  EXPECT_TRUE((*l)->Contains(R(1000)));
  EXPECT_GE((*l)->Entries().size(), 41u);
}

// Issue 13.7: a session may own one ref many times (Retain of 100,000
// copies is legal). Each copy used to take a slot of its own, all probing
// from the same hash bucket: 100,000 copies cost ~7 s and blocked the
// channel. Now one slot holds the count, and the file stays at its
// initial size.
TEST(LedgerTest, ManyCopiesOfOneRefTakeOneSlot) {
  structd::testing::TempDir dir;
  auto l = Ledger::Create(dir.Sub("l"), 1);
  ASSERT_TRUE(l.ok());
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE((*l)->Add(R(3)).ok());
  EXPECT_EQ((*l)->size(), 100000u);
  EXPECT_EQ((*l)->Count(R(3)), 100000u);
  ASSERT_EQ((*l)->Entries().size(), 1u);
  EXPECT_EQ((*l)->Entries()[0].count, 100000u);
  EXPECT_EQ(std::filesystem::file_size(dir.Sub("l")), 64u + 64u * 16u);
  for (int i = 0; i < 99999; ++i) ASSERT_TRUE((*l)->Remove(R(3)));
  EXPECT_EQ((*l)->Count(R(3)), 1u);
  (*l).reset();
  auto again = Ledger::Open(dir.Sub("l"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Count(R(3)), 1u);
  EXPECT_TRUE((*again)->Remove(R(3)));
  EXPECT_FALSE((*again)->Remove(R(3)));
}

TEST(LedgerTest, SetCountIsIdempotent) {
  structd::testing::TempDir dir;
  auto l = Ledger::Create(dir.Sub("l"), 1);
  ASSERT_TRUE(l.ok());
  ASSERT_TRUE((*l)->Add(R(1)).ok());
  ASSERT_TRUE((*l)->SetCount(R(1), 5).ok());
  ASSERT_TRUE((*l)->SetCount(R(1), 5).ok());
  EXPECT_EQ((*l)->size(), 5u);
  ASSERT_TRUE((*l)->SetCount(R(2), 2).ok());
  EXPECT_EQ((*l)->size(), 7u);
  ASSERT_TRUE((*l)->SetCount(R(1), 0).ok());
  ASSERT_TRUE((*l)->SetCount(R(1), 0).ok());
  EXPECT_EQ((*l)->size(), 2u);
  EXPECT_FALSE((*l)->Contains(R(1)));
}

// Ledgers written by the previous daemon (one word per reference) are
// converted when a restarted daemon opens them.
TEST(LedgerTest, AFormat1LedgerIsConvertedOnOpen) {
  structd::testing::TempDir dir;
  {
    std::vector<uint64_t> words(8 + 64, 0);
    words[0] = 0x315245474445444cull;  // "LDEDGER1"
    words[1] = 9;
    words[2] = 64;
    words[8 + 5] = R(1).bits();
    words[8 + 9] = R(1).bits();
    words[8 + 20] = R(2).bits();
    words[8 + 21] = 1;  // a tombstone
    std::ofstream f(dir.Sub("old"), std::ios::binary);
    f.write(reinterpret_cast<const char*>(words.data()), words.size() * 8);
  }
  auto l = Ledger::Open(dir.Sub("old"));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ((*l)->session_tag(), 9u);
  EXPECT_EQ((*l)->Count(R(1)), 2u);
  EXPECT_EQ((*l)->Count(R(2)), 1u);
  EXPECT_EQ((*l)->size(), 3u);
}

// A format-2 ledger (slots hashed by whole ref) is rehashed by block when
// opened, keeping every count.
TEST(LedgerTest, AFormat2LedgerIsConvertedOnOpen) {
  structd::testing::TempDir dir;
  {
    std::vector<uint64_t> words(8 + 2 * 64, 0);
    words[0] = 0x325245474445444cull;  // "LDEDGER2"
    words[1] = 5;
    words[2] = 64;
    // Slots anywhere: format 3 does not probe where format 2 hashed.
    for (uint32_t i = 0; i < 30; ++i) {
      words[8 + 2 * (63 - i)] = R(i).bits();
      words[8 + 2 * (63 - i) + 1] = i + 1;
    }
    std::ofstream f(dir.Sub("v2"), std::ios::binary);
    f.write(reinterpret_cast<const char*>(words.data()), words.size() * 8);
  }
  auto l = Ledger::Open(dir.Sub("v2"));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ((*l)->session_tag(), 5u);
  uint64_t total = 0;
  for (uint32_t i = 0; i < 30; ++i) {
    EXPECT_EQ((*l)->Count(R(i)), i + 1) << i;
    total += i + 1;
  }
  EXPECT_EQ((*l)->size(), total);
  // And it stays converted.
  l->reset();
  auto again = Ledger::Open(dir.Sub("v2"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Count(R(29)), 30u);
}

// An entry names a block: after its owner recycled the instance in place
// (the generation moved on), the newer ref finds the same entry and
// renews it, durably; no second entry appears.
TEST(LedgerTest, ANewerGenerationOfTheSameBlockIsTheSameEntry) {
  structd::testing::TempDir dir;
  auto l = Ledger::Create(dir.Sub("l"), 3);
  ASSERT_TRUE(l.ok());
  const Ref old_gen = Ref::Make(2, 4096, 7);
  const Ref new_gen = Ref::Make(2, 4096, 9);
  ASSERT_TRUE((*l)->Add(old_gen).ok());
  EXPECT_EQ((*l)->Count(new_gen), 1u);
  ASSERT_TRUE((*l)->Add(new_gen).ok());  // a Clone of the recycled one
  EXPECT_EQ((*l)->Count(new_gen), 2u);
  ASSERT_EQ((*l)->Entries().size(), 1u);
  EXPECT_EQ((*l)->Entries()[0].ref, new_gen);
  EXPECT_EQ((*l)->size(), 2u);
  EXPECT_FALSE((*l)->Contains(Ref::Make(2, 4112, 9))) << "the next block is another";
  l->reset();
  auto reopened = Ledger::Open(dir.Sub("l"));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  ASSERT_EQ((*reopened)->Entries().size(), 1u);
  EXPECT_EQ((*reopened)->Entries()[0].ref, new_gen);
  EXPECT_TRUE((*reopened)->Remove(new_gen));
  EXPECT_TRUE((*reopened)->Remove(new_gen));
  EXPECT_FALSE((*reopened)->Contains(new_gen));
}

}  // namespace
}  // namespace structd::server
