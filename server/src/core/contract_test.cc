// Contract corners an outside conformance suite found (issue 14): each test
// failed before its fix.

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/core.h"
#include "core/core_fixture.h"
#include "testing/temp_dir.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;
using shm::FieldKind;
using shm::FieldSpec;

class ContractTest : public CoreFixture {
 protected:
  void SetUp() override {
    CoreFixture::SetUp();
    session_ = Attach("contract");
  }
  void ReopenAndAttach() {
    Reopen();
    session_ = Attach("contract");
  }
  std::shared_ptr<Channel> Make(const std::string& name) {
    auto created = core_->CreateChannel(session_, name, 0, 0);
    EXPECT_TRUE(created.ok()) << created.status();
    return *core_->Joined(session_, name);
  }

  std::string session_;
};

// 14.1: CreateChannel(name = alpha's id) succeeded, and lookups of the new
// name then landed in alpha.
TEST_F(ContractTest, ANameShapedLikeAChannelIdIsRefused) {
  auto alpha = Make("alpha");
  auto hijack = core_->CreateChannel(session_, alpha->id(), 0, 0);
  ASSERT_EQ(hijack.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(hijack.status().message(), HasSubstr("shape of a channel id"));
  EXPECT_EQ(core_->CreateChannel(session_, "0123456789abcdef", 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Names that merely contain hex digits are fine.
  EXPECT_TRUE(core_->CreateChannel(session_, "0123456789abcdef0", 0, 0).ok());
  EXPECT_TRUE(core_->CreateChannel(session_, "0123456789ABCDEF", 0, 0).ok());
  EXPECT_EQ((*core_->Find(alpha->id()))->name(), "alpha");
}

// 14.2: ref<TOKEN> accepted tokens the channel never issued.
TEST_F(ContractTest, ARefFieldToAForeignOrGuessedTokenIsNotFound) {
  auto alpha = Make("alpha");
  auto beta = Make("beta");
  auto point = *alpha->RegisterType("P", {FieldSpec::Scalar("x", FieldKind::kF64)});
  shm::TypeToken foreign = point.type->token;
  auto in_beta = beta->RegisterType("N", {FieldSpec::Ref("p", foreign)});
  ASSERT_EQ(in_beta.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(in_beta.status().message(), HasSubstr("not registered in this channel"));
  shm::TypeToken guessed{0x1234, 0x5678};
  EXPECT_EQ(alpha->RegisterType("G", {FieldSpec::Ref("p", guessed)}).status().code(),
            absl::StatusCode::kNotFound);
  // A token this channel issued is fine.
  EXPECT_TRUE(alpha->RegisterType("N", {FieldSpec::Ref("p", foreign)}).ok());
}

// 14.4: what one channel holds is bounded, and the error names the option.
TEST_F(ContractTest, TypesRootsAndRegistryBytesPerChannelAreBounded) {
  options_.state_dir = dir_.Sub("limited");
  options_.limits.registry.max_types = 3;
  options_.limits.registry.max_registry_bytes = 400;
  options_.limits.max_roots = 2;
  ReopenAndAttach();
  auto ch = Make("small");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(ch->RegisterType("T" + std::to_string(i),
                                 {FieldSpec::Scalar("x", FieldKind::kU64)})
                    .ok());
  }
  auto fourth = ch->RegisterType("T3", {FieldSpec::Scalar("x", FieldKind::kU64)});
  ASSERT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(fourth.status().message(), HasSubstr("max_types_per_channel"));
  // Re-registering an existing key is not a new type.
  EXPECT_TRUE(ch->RegisterType("T0", {FieldSpec::Scalar("x", FieldKind::kU64)}).ok());
  auto other = Make("bytes");
  std::vector<FieldSpec> wide;
  for (int i = 0; i < 30; ++i) wide.push_back(FieldSpec::Scalar("field" + std::to_string(i), FieldKind::kU64));
  auto big = other->RegisterType("Wide", wide);
  ASSERT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.status().message(), HasSubstr("max_registry_bytes"));
  auto t = *ch->RegisterType("T0", {FieldSpec::Scalar("x", FieldKind::kU64)});
  auto refs = *ch->Allocate(session_, t.type->token, 3);
  ASSERT_TRUE(ch->SetRoot("a", refs[0]).ok());
  ASSERT_TRUE(ch->SetRoot("b", refs[1]).ok());
  ASSERT_TRUE(ch->SetRoot("a", refs[2]).ok());  // replacing is not adding
  auto third = ch->SetRoot("c", refs[2]);
  ASSERT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("max_roots_per_channel"));
  EXPECT_TRUE(ch->Check().problems.empty());  // the refused root took no reference
}

// 14.4: the journal survives a restart with every change in it.
TEST_F(ContractTest, ManyRootsAndTypesSurviveARestart) {
  auto ch = Make("many");
  auto t = *ch->RegisterType("T", {FieldSpec::Scalar("x", FieldKind::kU64)});
  auto refs = *ch->Allocate(session_, t.type->token, 1);
  for (int i = 0; i < 2500; ++i) ASSERT_TRUE(ch->SetRoot("r" + std::to_string(i), refs[0]).ok());
  for (int i = 0; i < 2500; i += 2) ASSERT_TRUE(ch->DeleteRoot("r" + std::to_string(i)).ok());
  ASSERT_TRUE(ch->Seal().ok());
  ch.reset();
  ReopenAndAttach();
  auto again = *core_->Find("many");
  EXPECT_EQ(again->ListRoots().size(), 1250u);
  EXPECT_TRUE(again->Check().problems.empty());
  EXPECT_EQ(again->RegisterType("U", {FieldSpec::Scalar("y", FieldKind::kU64)}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // sealed
}

// 14.6: the state subdirectories were 0755; the docs say 0700.
TEST_F(ContractTest, EveryStateDirectoryIsPrivate) {
  auto ch = Make("private");
  std::vector<std::string> dirs = {options_.state_dir, options_.state_dir + "/channels",
                                   options_.state_dir + "/sessions", ch->dir(),
                                   ch->dir() + "/arena", ch->dir() + "/ledgers"};
  for (const std::string& d : dirs) {
    struct stat st;
    ASSERT_EQ(stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << d;
  }
  // Directories an older daemon left 0755 are made private at restart.
  chmod((ch->dir() + "/ledgers").c_str(), 0755);
  ch.reset();
  ReopenAndAttach();
  struct stat st;
  ASSERT_EQ(stat((options_.state_dir + "/channels").c_str(), &st), 0);
  auto again = *core_->Find("private");
  ASSERT_EQ(stat((again->dir() + "/ledgers").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

// 14.7: newlines and ANSI escapes in client_name went into the log and
// `structctl sessions` as they were.
TEST_F(ContractTest, AClientNameMustBePrintable) {
  for (std::string bad : {std::string("a\nforged log line"), std::string("\x1b[2Jclear"),
                          std::string("nul\0byte", 8), std::string("\xc3"),
                          std::string("c1\xc2\x9b")}) {
    auto s = core_->Attach(me_, bad);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.status().message(), HasSubstr("printable"));
  }
  EXPECT_TRUE(core_->Attach(me_, "pricer-2 (café)").ok());
}

}  // namespace
}  // namespace structd::server
