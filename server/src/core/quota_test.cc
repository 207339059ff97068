// Quotas on what clients can make the daemon hold (doc/security.md): one
// uid cannot take more than its share, and the others keep growing.

#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/core_fixture.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;

class QuotaTest : public CoreFixture {
 protected:
  void SetUp() override {
    CoreFixture::SetUp();
    options_.arena.extent_size = 1 << 20;
    options_.arena.max_extents = 16;
    options_.quotas.max_bytes_per_uid = 2 << 20;  // two extents
    options_.quotas.max_bytes_per_channel = 8 << 20;
    options_.quotas.max_bytes_total = 6 << 20;
    options_.quotas.max_channels_per_uid = 2;
    Reopen();
  }
  // A session of `uid` (this process, for the pid binding).
  std::string AttachAs(uid_t uid) {
    PeerCredentials p = me_;
    p.uid = uid;
    auto s = core_->Attach(p, "uid" + std::to_string(uid));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->id : "";
  }
  // Allocates `n` 32-byte instances in `channel`.
  absl::Status Fill(const std::string& session, const std::string& channel, size_t n) {
    auto ch = core_->Joined(session, channel);
    if (!ch.ok()) return ch.status();
    auto t = (*ch)->RegisterType("N", Node());
    if (!t.ok()) return t.status();
    return (*ch)->Allocate(session, t->type->token, n).status();
  }
  uint64_t Used(const std::string& quota, uid_t uid) {
    for (const QuotaUse& q : core_->Quotas()) {
      if (q.quota == quota && (!q.per_uid || q.uid == uid)) return q.used;
    }
    return UINT64_MAX;
  }
};

TEST_F(QuotaTest, OneUidCannotTakeMoreThanItsShareAndOthersKeepGrowing) {
  std::string greedy = AttachAs(61001);
  ASSERT_TRUE(core_->CreateChannel(greedy, "greedy", 0, 0).ok());
  // One extent holds about 30,000 of these: 40,000 need a second.
  ASSERT_TRUE(Fill(greedy, "greedy", 40000).ok());
  EXPECT_EQ(Used("max_bytes_per_uid", 61001), 2u << 20);
  absl::Status more = Fill(greedy, "greedy", 40000);
  EXPECT_EQ(more.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(more.message(), HasSubstr("max_bytes_per_uid"));
  EXPECT_THAT(more.message(), HasSubstr("uid 61001"));
  // Its second channel cannot even start: the share is used up.
  auto second = core_->CreateChannel(greedy, "greedy2", 0, 0);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), HasSubstr("max_bytes_per_uid"));

  // Another uid's channel still grows.
  std::string modest = AttachAs(61002);
  ASSERT_TRUE(core_->CreateChannel(modest, "modest", 0, 0).ok());
  EXPECT_TRUE(Fill(modest, "modest", 40000).ok());
  EXPECT_EQ(Used("max_bytes_per_uid", 61002), 2u << 20);
  EXPECT_EQ(Used("max_bytes_total", 0), 4u << 20);

  // Dropping gives the share back.
  auto greedy_ch = *core_->Joined(greedy, "greedy");
  ASSERT_TRUE(core_->DropChannelAsAdmin("greedy").ok());
  greedy_ch.reset();
  core_->Detach(greedy);
  EXPECT_EQ(Used("max_bytes_per_uid", 61001), UINT64_MAX);  // holds nothing now
  greedy = AttachAs(61001);
  EXPECT_TRUE(core_->CreateChannel(greedy, "greedy3", 0, 0).ok());
}

TEST_F(QuotaTest, TheTotalBoundsEveryUidTogether) {
  options_.quotas.max_bytes_per_uid = 64 << 20;
  options_.quotas.max_channels_per_uid = 100;
  Reopen();
  std::string s = AttachAs(61001);
  int created = 0;
  absl::Status last;
  for (int i = 0; i < 10; ++i) {
    auto c = core_->CreateChannel(s, "c" + std::to_string(i), 0, 0);
    if (!c.ok()) {
      last = c.status();
      break;
    }
    ++created;
  }
  EXPECT_EQ(created, 6);  // 6 MiB of 1 MiB extents
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(last.message(), HasSubstr("max_bytes_total"));
}

TEST_F(QuotaTest, ChannelsPerUidAreBounded) {
  options_.quotas.max_bytes_per_uid = 64 << 20;
  Reopen();
  std::string s = AttachAs(61001);
  ASSERT_TRUE(core_->CreateChannel(s, "a", 0, 0).ok());
  ASSERT_TRUE(core_->CreateChannel(s, "b", 0, 0).ok());
  auto c = core_->CreateChannel(s, "c", 0, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("max_channels_per_uid"));
}

// The daemon's extent size and count are bounds: a client may ask for
// less, never more (it asked for 256 MiB extents, 16,383 of them).
TEST_F(QuotaTest, AClientMayAskForSmallerExtentsNeverLarger) {
  std::string s = AttachAs(61001);
  auto big = core_->CreateChannel(s, "big", 256 << 20, 0);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.status().message(), HasSubstr("extent_size"));
  auto many = core_->CreateChannel(s, "many", 0, 16383);
  EXPECT_EQ(many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(many.status().message(), HasSubstr("max_extents"));
  auto small = core_->CreateChannel(s, "small", 128 << 10, 4);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->arena.extent_size, 128u << 10);
}

// A restarted daemon counts what exists, and still enforces the limits.
TEST_F(QuotaTest, ARestartCountsWhatTheArenasHold) {
  std::string s = AttachAs(61001);
  ASSERT_TRUE(core_->CreateChannel(s, "kept", 0, 0).ok());
  ASSERT_TRUE(Fill(s, "kept", 40000).ok());
  Reopen();
  EXPECT_EQ(Used("max_bytes_per_uid", 61001), 2u << 20);
  EXPECT_EQ(Used("max_channels_per_uid", 61001), 1u);
  std::string again = AttachAs(61001);
  auto c = core_->CreateChannel(again, "more", 0, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
}

// drop_idle_channels_after: a channel nobody has joined for that long is
// dropped and its share given back; one with a member stays.
TEST_F(QuotaTest, ChannelsNobodyJoinedForTheConfiguredTimeAreDropped) {
  options_.drop_idle_channels_after = std::chrono::milliseconds(100);
  Reopen();
  std::string a = AttachAs(61001);
  std::string b = AttachAs(61001);
  ASSERT_TRUE(core_->CreateChannel(a, "abandoned", 0, 0).ok());
  ASSERT_TRUE(core_->CreateChannel(b, "kept", 0, 0).ok());
  EXPECT_EQ(core_->DropIdleChannels(), 0u);
  core_->Detach(a);
  EXPECT_EQ(core_->DropIdleChannels(), 0u);  // not for long enough yet
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(core_->DropIdleChannels(), 1u);
  EXPECT_EQ(core_->Find("abandoned").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(core_->Find("kept").ok());
  EXPECT_EQ(Used("max_channels_per_uid", 61001), 1u);
  // Off by default: nothing is dropped however long it waits.
  options_.drop_idle_channels_after = std::chrono::milliseconds(0);
  Reopen();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(core_->DropIdleChannels(), 0u);
}

}  // namespace
}  // namespace structd::server
