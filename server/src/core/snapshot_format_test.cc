#include "core/snapshot_format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "structd/shm/format.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;

SnapshotManifest TwoExtents() {
  SnapshotManifest m;
  m.architecture = HostArchitecture();
  m.daemon_version = "test";
  m.taken_unix_ms = 1764547200000;
  m.channel_id = "00112233445566ff";
  m.channel_name = "shop";
  m.arena_format_version = shm::kFormatVersion;
  m.extent_size = 1 << 20;
  m.max_extents = 8;
  m.extent_count = 2;
  m.epoch = 0xfeedface12345678;
  m.live_instances = 42;
  m.files = {{"meta.toml", 300, Sha256Hex("meta")},
             {"arena", sizeof(shm::ArenaHeader), Sha256Hex("arena")},
             {"extent.0", 1 << 20, Sha256Hex("0")},
             {"extent.1", 1 << 20, Sha256Hex("1")}};
  return m;
}

// Re-signs an edited manifest body, as someone who knows the format would.
std::string Resign(std::string text) {
  size_t at = text.rfind("\nmanifest_sha256");
  std::string body = text.substr(0, at + 1);
  return absl::StrCat(body, "manifest_sha256 = \"", Sha256Hex(body), "\"\n");
}

TEST(SnapshotFormatTest, Sha256OfKnownInput) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 pieces;
  pieces.Update("a", 1);
  pieces.Update("bc", 2);
  EXPECT_EQ(pieces.HexDigest(), Sha256Hex("abc"));
}

TEST(SnapshotFormatTest, AManifestReadsBackAsWritten) {
  std::string text = RenderSnapshotManifest(TwoExtents());
  auto m = ParseSnapshotManifest(text);
  ASSERT_TRUE(m.ok()) << m.status() << "\n" << text;
  EXPECT_EQ(m->channel_name, "shop");
  EXPECT_EQ(m->channel_id, "00112233445566ff");
  EXPECT_EQ(m->epoch, 0xfeedface12345678u);
  EXPECT_EQ(m->extent_count, 2u);
  EXPECT_EQ(m->taken_unix_ms, 1764547200000u);
  ASSERT_EQ(m->files.size(), 4u);
  EXPECT_EQ(m->Find("extent.1")->sha256, Sha256Hex("1"));
  EXPECT_EQ(m->Find("extent.2"), nullptr);
}

TEST(SnapshotFormatTest, AnEditedOrCutManifestIsDataLoss) {
  std::string text = RenderSnapshotManifest(TwoExtents());
  std::string edited = absl::StrReplaceAll(text, {{"'shop'", "'shoq'"}});
  ASSERT_NE(edited, text);
  EXPECT_EQ(ParseSnapshotManifest(edited).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(ParseSnapshotManifest(edited).status().message(), HasSubstr("checksum"));
  EXPECT_EQ(ParseSnapshotManifest(text.substr(0, text.size() / 2)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseSnapshotManifest("").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseSnapshotManifest(text + "x = 1\n").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(SnapshotFormatTest, ImpossibleContentsAreRefusedEvenWhenSigned) {
  std::string text = RenderSnapshotManifest(TwoExtents());
  // A file the arena does not have, a missing extent, a wrong size.
  for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"'extent.1'", "'../../etc/passwd'"},
           {"'extent.1'", "'extent.01'"},
           {"extent_count = 2", "extent_count = 3"},
           {"extent_count = 2", "extent_count = 9"},
           {"bytes = 1048576", "bytes = 4096"},
           {"epoch = 'feedface12345678'", "epoch = '0'"},
           {"channel_name = 'shop'", "channel_name = ''"}}) {
    SCOPED_TRACE(from + " -> " + to);
    std::string edited = Resign(absl::StrReplaceAll(text, {{from, to}}));
    ASSERT_NE(edited, text);
    auto m = ParseSnapshotManifest(edited);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << m.status();
  }
}

TEST(SnapshotFormatTest, AnotherVersionOrArchitectureIsAPreconditionNotDamage) {
  SnapshotManifest m = TwoExtents();
  m.version = 2;
  auto v = ParseSnapshotManifest(RenderSnapshotManifest(m));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(v.status().message(), HasSubstr("version 2"));
  m = TwoExtents();
  m.architecture = "sparc-be-ilp32";
  auto a = ParseSnapshotManifest(RenderSnapshotManifest(m));
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(a.status().message(), HasSubstr("sparc-be-ilp32"));
  m = TwoExtents();
  m.arena_format_version = shm::kFormatVersion + 1;
  EXPECT_EQ(ParseSnapshotManifest(RenderSnapshotManifest(m)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SnapshotFormatTest, DataFileNames) {
  for (const char* ok : {"meta.toml", "arena", "extent.0", "extent.17"}) {
    EXPECT_TRUE(IsSnapshotDataFile(ok)) << ok;
  }
  for (const char* bad : {"", "extent.", "extent.-1", "extent.01", "extent.x", "../arena",
                          "manifest.toml", "extent.99999999"}) {
    EXPECT_FALSE(IsSnapshotDataFile(bad)) << bad;
  }
}

}  // namespace
}  // namespace structd::server
