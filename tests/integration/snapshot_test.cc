// Snapshots and restores of a channel (structctl snapshot / restore,
// doc/snapshots.md) and an operator's writes (structctl set, root set,
// root delete) against a real daemon, with real clients writing meanwhile.

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/client_types.h"
#include "testing/structctl_fixture.h"

namespace structd::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

// Flips one bit of the byte at `offset` of `path`.
void FlipBit(const std::string& path, off_t offset) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  uint8_t b = 0;
  ASSERT_EQ(pread(fd, &b, 1, offset), 1);
  b ^= 1;
  ASSERT_EQ(pwrite(fd, &b, 1, offset), 1);
  close(fd);
}

class SnapshotTest : public StructctlFixture {
 protected:
  // A place for snapshot directories (not created: structctl creates them).
  std::string Dir(const std::string& name) { return scratch_.Sub(name); }

  // Fills every field of `e` with a value of its own.
  void Fill(const Everything& e, client::Owned<Node>& head, client::Owned<Node>& tail) {
    e.flag().store(true);
    e.tiny().store(-128);
    e.small().store(-30000);
    e.medium().store(2000000000);
    e.big().store(INT64_MIN);
    e.octet().store(255);
    e.port().store(65535);
    e.count().store(4000000000u);
    e.total().store(UINT64_MAX);
    e.ratio().store(0.25f);
    e.price().store(-1234.5);
    ASSERT_TRUE(e.name().Write("kept exactly").ok());
    ASSERT_TRUE(e.blob().Write(std::string("\x00\xff\x10", 3)).ok());
    for (uint32_t i = 0; i < 4; ++i) e.samples().at(i)->store(static_cast<int32_t>(i * 7) - 3);
    head->value().store(11);
    tail->value().store(22);
    ASSERT_TRUE(c().Store(head->next(), tail.ref()).ok());
    ASSERT_TRUE(c().Store(e.next(), head.ref()).ok());
    ASSERT_TRUE(c().Store(e.any(), tail.ref()).ok());
  }

  // The values Fill wrote, read from `e` (in whichever channel).
  void ExpectFilled(client::Channel& ch, Everything e, shm::Ref head, shm::Ref tail) {
    EXPECT_TRUE(e.flag().load());
    EXPECT_EQ(e.tiny().load(), -128);
    EXPECT_EQ(e.small().load(), -30000);
    EXPECT_EQ(e.medium().load(), 2000000000);
    EXPECT_EQ(e.big().load(), INT64_MIN);
    EXPECT_EQ(e.octet().load(), 255);
    EXPECT_EQ(e.port().load(), 65535);
    EXPECT_EQ(e.count().load(), 4000000000u);
    EXPECT_EQ(e.total().load(), UINT64_MAX);
    EXPECT_EQ(e.ratio().load(), 0.25f);
    EXPECT_EQ(e.price().load(), -1234.5);
    EXPECT_EQ(*e.name().Read(), "kept exactly");
    EXPECT_EQ(*e.blob().Read(), std::string("\x00\xff\x10", 3));
    for (uint32_t i = 0; i < 4; ++i) {
      EXPECT_EQ(e.samples().at(i)->load(), static_cast<int32_t>(i * 7) - 3);
    }
    EXPECT_EQ(e.next().load(), head);
    EXPECT_EQ(e.any().load(), tail);
    auto h = ch.View<Node>(head);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->value().load(), 11u);
    EXPECT_EQ(h->next().load(), tail);
    EXPECT_EQ(ch.View<Node>(tail)->value().load(), 22u);
  }

  std::map<std::string, std::string> TokensByKey(const std::string& channel) {
    std::map<std::string, std::string> out;
    Value types = Json({"types", channel});
    for (const Value& t : Get(types, "types").list_value().values()) {
      out[Get(t, "key").string_value()] = Get(t, "token").string_value();
    }
    return out;
  }

  // The channel directories in the daemon's state directory.
  size_t ChannelDirs() {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(daemon_.state_dir() + "/channels")) {
      (void)e;
      ++n;
    }
    return n;
  }

  TempDir scratch_;
};

TEST_F(SnapshotTest, ARestoreKeepsValuesRefsRootsTokensAndCapabilities) {
  auto e = c().Allocate<Everything>();
  ASSERT_TRUE(e.ok()) << e.status();
  auto head = c().Allocate<Node>();
  auto tail = c().Allocate<Node>();
  ASSERT_TRUE(head.ok() && tail.ok());
  Fill(**e, *head, *tail);
  ASSERT_TRUE(c().SetRoot("everything", e->ref()).ok());
  ASSERT_TRUE(c().SetRoot("list", head->ref()).ok());
  auto guarded = c().Allocate<Guarded>();
  ASSERT_TRUE(guarded.ok());
  (*guarded)->value().store(99);
  ASSERT_TRUE(c().SetRoot("guarded", guarded->ref()).ok());
  // Another process holds the mutex while the snapshot is taken.
  SpawnedProcess holder({STRUCTD_TEST_CLIENT, "hold", daemon_.socket(), "shop",
                         created_.member_capability, "1", "guarded"});
  ASSERT_EQ(holder.ReadLine(), "ready");

  const std::string dir = Dir("shop.snap");
  CtlRun snap = Structctl({"snapshot", "shop", dir});
  ASSERT_EQ(snap.code, 0) << snap.out;
  EXPECT_THAT(snap.out, HasSubstr("snapshot of channel shop written to " + dir));
  for (const char* f : {"manifest.toml", "meta.toml", "arena", "extent.0"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  }
  for (const auto& entry : fs::directory_iterator(scratch_.path())) {  // no temporaries
    EXPECT_EQ(entry.path().filename(), "shop.snap");
  }
  EXPECT_THAT(ReadText(dir + "/manifest.toml"), HasSubstr("channel_name = 'shop'"));

  // The original's name is taken; the message says what to do.
  CtlRun same = StructctlAll({"restore", dir});
  EXPECT_EQ(same.code, 1);
  EXPECT_THAT(same.out, HasSubstr("ALREADY_EXISTS"));
  EXPECT_THAT(same.out, HasSubstr("--name NEW"));

  Value restored = Json({"restore", dir, "--name", "copy"});
  EXPECT_EQ(Get(restored, "channel").string_value(), "copy");
  EXPECT_EQ(Get(restored, "roots").number_value(), 3);
  // Everything, Node, Guarded, and the built-in type of session records
  // (registered once this process's Fill stored refs in shared memory).
  EXPECT_EQ(Get(restored, "types").number_value(), 4);
  // Everything, two Nodes and Guarded are reachable from roots; the
  // holder's spare Node was only its session's and is freed.
  EXPECT_EQ(Get(restored, "live_instances").number_value(), 4);
  EXPECT_GE(Get(restored, "unreferenced_freed").number_value(), 1);
  EXPECT_EQ(Get(restored, "mutexes_owner_died").number_value(), 1);
  EXPECT_EQ(Get(restored, "dangling_dropped").number_value(), 0);
  EXPECT_EQ(TokensByKey("copy"), TokensByKey("shop"));
  CtlRun check = Structctl({"check", "copy"});
  EXPECT_EQ(check.code, 0) << check.out;

  // Joined with the snapshot's capabilities; a wrong one is refused.
  EXPECT_FALSE(client_->Join("copy", "not-the-capability").ok());
  auto copy = client_->Join("copy", created_.member_capability);
  ASSERT_TRUE(copy.ok()) << copy.status();
  client::Channel& cc = **copy;
  auto everything = cc.GetRoot("everything");
  ASSERT_TRUE(everything.ok());
  EXPECT_EQ(*everything, e->ref());
  EXPECT_EQ(*cc.GetRoot("list"), head->ref());
  auto restored_e = cc.View<Everything>(*everything);
  ASSERT_TRUE(restored_e.ok()) << restored_e.status();
  ExpectFilled(cc, *restored_e, head->ref(), tail->ref());
  // The restored copy is apart from the original: a write to one is not
  // seen in the other.
  restored_e->total().store(5);
  EXPECT_EQ((*e)->total().load(), UINT64_MAX);

  // The holder's lock did not come along as a lock: the next locker is
  // told its owner died, and the value is there.
  auto g = cc.View<Guarded>(*cc.GetRoot("guarded"));
  ASSERT_TRUE(g.ok());
  auto guard = g->lock().TryLock();
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE(guard->owner_died());
  EXPECT_EQ(g->value().load(), 99u);
  // The original's mutex is still the holder's.
  EXPECT_FALSE((*guarded)->lock().TryLock().ok());
  // Both operator actions are in the daemon's log.
  EXPECT_THAT(daemon_.Log(), HasSubstr("channel 'copy' restored from a snapshot"));
}

// What a host reboot needs: the directory restored into another daemon
// (a fresh state directory), with the name free there.
TEST_F(SnapshotTest, ASnapshotRestoresIntoAnotherDaemon) {
  auto e = c().Allocate<Everything>();
  auto head = c().Allocate<Node>();
  auto tail = c().Allocate<Node>();
  ASSERT_TRUE(e.ok() && head.ok() && tail.ok());
  Fill(**e, *head, *tail);
  ASSERT_TRUE(c().SetRoot("everything", e->ref()).ok());
  const std::string dir = Dir("moved");
  ASSERT_EQ(Structctl({"snapshot", "shop", dir}).code, 0);

  DaemonProcess other;
  CtlRun r = Structctl({"--socket", other.socket(), "restore", dir}, false);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("channel shop (id "));
  EXPECT_EQ(Structctl({"--socket", other.socket(), "check", "shop"}, false).code, 0);
  client::ClientOptions o;
  o.socket = other.socket();
  auto there = client::Client::Connect(o);
  ASSERT_TRUE(there.ok()) << there.status();
  auto joined = (*there)->Join("shop", created_.owner_capability);
  ASSERT_TRUE(joined.ok()) << joined.status();
  auto root = (*joined)->GetRoot("everything");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(*root, e->ref());
  auto view = (*joined)->View<Everything>(*root);
  ASSERT_TRUE(view.ok()) << view.status();
  ExpectFilled(**joined, *view, head->ref(), tail->ref());
}

TEST_F(SnapshotTest, SnapshotsTakenWhileClientsWriteRestoreConsistent) {
  std::vector<client::Owned<Anchor>> anchors;
  for (int i = 0; i < 4; ++i) {
    auto a = c().Allocate<Anchor>();
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(c().SetRoot("a" + std::to_string(i), a->ref()).ok());
    anchors.push_back(std::move(*a));
  }
  std::vector<std::unique_ptr<SpawnedProcess>> workers;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    workers.push_back(std::make_unique<SpawnedProcess>(
        std::vector<std::string>{STRUCTD_TEST_CLIENT, "chaos", daemon_.socket(), "shop",
                                 created_.member_capability, std::to_string(seed)}));
  }
  for (auto& w : workers) ASSERT_EQ(w->ReadLine(), "ready");
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const std::string dir = Dir("busy" + std::to_string(round));
    CtlRun snap = Structctl({"snapshot", "shop", dir});
    ASSERT_EQ(snap.code, 0) << snap.out;
  }
  workers.clear();  // killed
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    const std::string name = "busy" + std::to_string(round);
    Value r = Json({"restore", Dir(name), "--name", name});
    EXPECT_GE(Get(r, "roots").number_value(), 4);
    // What recovery repairs after a kill, the restore repaired: the
    // check (refcounts equal to the references that exist, nothing
    // leaked, strings whole) finds nothing.
    CtlRun check = Structctl({"check", name});
    EXPECT_EQ(check.code, 0) << check.out;
    EXPECT_THAT(check.out, HasSubstr("ok ("));
  }
  EXPECT_EQ(Structctl({"check", "shop"}).code, 0);
}

TEST_F(SnapshotTest, DamagedSnapshotsAreRefusedAndLeaveNothingBehind) {
  auto nodes = c().AllocateBatch<Node>(50);
  ASSERT_TRUE(nodes.ok());
  for (auto& n : *nodes) n->value().store(0x5555);
  ASSERT_TRUE(c().SetRoot("first", (*nodes)[0].ref()).ok());
  const std::string good = Dir("good");
  ASSERT_EQ(Structctl({"snapshot", "shop", good}).code, 0);
  const size_t dirs_before = ChannelDirs();

  struct Damage {
    const char* what;
    std::function<void(const std::string&)> apply;
    const char* says;
  };
  const std::vector<Damage> damages = {
      {"a flipped bit in an extent",
       [](const std::string& d) { FlipBit(d + "/extent.0", 4096 + 24); }, "extent.0"},
      {"a flipped bit in the arena header", [](const std::string& d) { FlipBit(d + "/arena", 0); },
       "arena"},
      {"a flipped bit in meta.toml", [](const std::string& d) { FlipBit(d + "/meta.toml", 10); },
       "meta.toml"},
      {"an edited manifest",
       [](const std::string& d) {
         std::string m = ReadText(d + "/manifest.toml");
         m.replace(m.find("'shop'"), 6, "'shoq'");
         WriteText(d + "/manifest.toml", m);
       },
       "checksum"},
      {"a truncated extent",
       [](const std::string& d) { fs::resize_file(d + "/extent.0", 4096); }, "extent.0"},
      {"no manifest", [](const std::string& d) { fs::remove(d + "/manifest.toml"); },
       "no manifest.toml"},
      {"a missing extent", [](const std::string& d) { fs::remove(d + "/extent.0"); },
       "extent.0 is missing"},
  };
  int i = 0;
  for (const Damage& damage : damages) {
    SCOPED_TRACE(damage.what);
    const std::string dir = Dir("damaged" + std::to_string(i++));
    fs::copy(good, dir);
    damage.apply(dir);
    CtlRun r = StructctlAll({"restore", dir, "--name", "restored"});
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_THAT(r.out, HasSubstr("DATA_LOSS"));
    EXPECT_THAT(r.out, HasSubstr(damage.says));
    EXPECT_EQ(Structctl({"types", "restored"}).code, 1);  // no such channel
    EXPECT_EQ(ChannelDirs(), dirs_before);                // no files left
  }
  // The intact snapshot still restores, under the name the others wanted.
  Value ok = Json({"restore", good, "--name", "restored"});
  EXPECT_EQ(Get(ok, "live_instances").number_value(), 1);  // only the root's
  EXPECT_EQ(ChannelDirs(), dirs_before + 1);
}

TEST_F(SnapshotTest, SnapshotRefusesAnExistingDirectoryAndAnUnknownChannel) {
  const std::string taken = Dir("taken");
  fs::create_directory(taken);
  WriteText(taken + "/keep", "mine");
  CtlRun r = StructctlAll({"snapshot", "shop", taken});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr(taken));
  EXPECT_EQ(ReadText(taken + "/keep"), "mine");
  const std::string nowhere = Dir("nowhere");
  CtlRun unknown = StructctlAll({"snapshot", "no-such-channel", nowhere});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_THAT(unknown.out, HasSubstr("NOT_FOUND"));
  EXPECT_FALSE(fs::exists(nowhere));
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(scratch_.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);  // "taken" only: no half-written directory
}

// structctl set: one field of every kind, written and read back through a
// client's view; bad values refused with what to do, the field unchanged.
TEST_F(SnapshotTest, SetWritesEveryKindAndRefusesBadValues) {
  auto e = c().Allocate<Everything>();
  auto n = c().Allocate<Node>();
  ASSERT_TRUE(e.ok() && n.ok());
  const std::string ref = e->ref().ToString();
  auto set = [&](const std::string& field, const std::string& value) {
    return StructctlAll({"set", "shop", ref, field, value});
  };
  struct Case {
    std::string field;
    std::string value;
    std::function<bool()> holds;
  };
  const Everything& v = **e;
  const std::vector<Case> cases = {
      {"flag", "true", [&] { return v.flag().load(); }},
      {"tiny", "-128", [&] { return v.tiny().load() == -128; }},
      {"small", "0x7fff", [&] { return v.small().load() == 32767; }},
      {"medium", "-5", [&] { return v.medium().load() == -5; }},
      {"big", "-9223372036854775808", [&] { return v.big().load() == INT64_MIN; }},
      {"octet", "255", [&] { return v.octet().load() == 255; }},
      {"port", "65535", [&] { return v.port().load() == 65535; }},
      {"count", "0xffffffff", [&] { return v.count().load() == UINT32_MAX; }},
      {"total", "18446744073709551615", [&] { return v.total().load() == UINT64_MAX; }},
      {"ratio", "1.5", [&] { return v.ratio().load() == 1.5f; }},
      {"price", "-2.25", [&] { return v.price().load() == -2.25; }},
      {"name", "hello world", [&] { return *v.name().Read() == "hello world"; }},
      {"blob", "0xdeadbeef", [&] { return *v.blob().Read() == "\xde\xad\xbe\xef"; }},
      {"samples[2]", "42", [&] { return v.samples().at(2)->load() == 42; }},
      {"next", n->ref().ToString(), [&] { return v.next().load() == n->ref(); }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.field);
    CtlRun r = set(k.field, k.value);
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_TRUE(k.holds()) << r.out;
  }
  auto refcount = [&](shm::Ref r) {
    return c().arena().Resolve(r)->header().refcount.load();
  };
  EXPECT_EQ(refcount(n->ref()), 2u);  // the Owned and the field
  Value json = Json({"set", "shop", ref, "next", "null"});
  EXPECT_EQ(Get(json, "previous").string_value(), n->ref().ToString());
  EXPECT_EQ(Get(json, "value").string_value(), "r:null");
  EXPECT_EQ(Get(json, "type").string_value(), "Everything");
  EXPECT_TRUE(v.next().load().is_null());
  EXPECT_EQ(refcount(n->ref()), 1u);  // the field's reference released

  struct Bad {
    const char* field;
    const char* value;
    const char* says;
  };
  const std::vector<Bad> bad = {
      {"tiny", "128", "-128 to 127"},
      {"octet", "-1", "0 to 255"},
      {"medium", "12abc", "is not a i32"},
      {"flag", "yes", "true, false"},
      {"ratio", "1e39", "does not fit"},
      {"lock", "1", "cannot be set by hand"},
      {"ready", "1", "cannot be set by hand"},
      {"samples[4]", "1", "past its 4 elements"},
      {"samples", "1", "is an array"},
      {"flag[0]", "1", "is not an array"},
      {"samples[x]", "1", "NAME[INDEX]"},
      {"name", "seventeen chars!!", "capacity"},
      {"blob", "abc", "not hex"},
      {"blob", "0xzz", "not hex"},
      {"nosuch", "1", "its fields: flag, tiny"},
      {"next", "garbage", "is not a ref"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(std::string(b.field) + " = " + b.value);
    CtlRun r = set(b.field, b.value);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_THAT(r.out, HasSubstr(b.says));
    for (const Case& k : cases) {
      if (k.field != "next") {
        EXPECT_TRUE(k.holds()) << k.field << " changed";
      }
    }
  }
  // A ref to a freed instance is refused, and leaves the field null.
  shm::Ref freed = n->ref();
  n->Reset();
  ASSERT_TRUE(c().Flush().ok());
  CtlRun dangling = set("next", freed.ToString());
  EXPECT_EQ(dangling.code, 1) << dangling.out;
  EXPECT_TRUE(v.next().load().is_null());
  // A REF that cannot be one is a usage error.
  EXPECT_EQ(StructctlAll({"set", "shop", "not-a-ref", "tiny", "1"}).code, 2);
  EXPECT_EQ(StructctlAll({"set", "nope", ref, "tiny", "1"}).code, 1);
  // Every write is in the daemon's log, with who made it.
  const std::string log = daemon_.Log();
  EXPECT_THAT(log, HasSubstr("admin write by uid " + std::to_string(getuid())));
  EXPECT_THAT(log, HasSubstr("Everything.samples[2]"));
  EXPECT_EQ(Structctl({"check", "shop"}).code, 0);
}

TEST_F(SnapshotTest, RootSetAndDeleteMoveReferences) {
  auto a = c().Allocate<Node>();
  auto b = c().Allocate<Node>();
  ASSERT_TRUE(a.ok() && b.ok());
  auto refcount = [&](shm::Ref r) {
    return c().arena().Resolve(r)->header().refcount.load();
  };
  CtlRun set = Structctl({"root", "set", "shop", "main", a->ref().ToString()});
  EXPECT_EQ(set.code, 0) << set.out;
  EXPECT_THAT(set.out, HasSubstr("root main set to " + a->ref().ToString()));
  EXPECT_EQ(*c().GetRoot("main"), a->ref());
  EXPECT_EQ(refcount(a->ref()), 2u);
  Value moved = Json({"root", "set", "shop", "main", b->ref().ToString()});
  EXPECT_EQ(Get(moved, "previous").string_value(), a->ref().ToString());
  EXPECT_EQ(refcount(a->ref()), 1u);
  EXPECT_EQ(refcount(b->ref()), 2u);
  EXPECT_EQ(Structctl({"root", "delete", "shop", "main"}).code, 0);
  EXPECT_EQ(refcount(b->ref()), 1u);
  EXPECT_FALSE(c().GetRoot("main").ok());
  CtlRun again = StructctlAll({"root", "delete", "shop", "main"});
  EXPECT_EQ(again.code, 1);
  EXPECT_THAT(again.out, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(StructctlAll({"root", "set", "shop", "main", "null"}).code, 2);
  EXPECT_EQ(StructctlAll({"root", "set", "shop", "bad name/", a->ref().ToString()}).code, 1);
  shm::Ref freed = a->ref();
  a->Reset();
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(StructctlAll({"root", "set", "shop", "main", freed.ToString()}).code, 1);
  EXPECT_FALSE(c().GetRoot("main").ok());
  EXPECT_THAT(daemon_.Log(), HasSubstr("root 'main' deleted"));
}

}  // namespace
}  // namespace structd::testing

namespace structd::testing {
namespace {

// Waits up to 20 s for `pred`.
bool Eventually(const std::function<bool()>& pred) {
  for (int i = 0; i < 2000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

std::vector<std::string> SnapshotsIn(const std::string& dir, const std::string& channel) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.starts_with(channel + "@") && name.ends_with("Z")) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A reboot of a tmpfs state directory: empty at the next start. Then a
// client joins `channel` (null channel, with a failure, if it cannot).
struct Rebooted {
  std::unique_ptr<client::Client> client;
  std::shared_ptr<client::Channel> channel;
};
Rebooted RebootAndJoin(DaemonProcess& daemon, const std::string& channel,
                       const std::string& capability) {
  std::filesystem::remove_all(daemon.state_dir());
  daemon.Start();
  Rebooted r;
  client::ClientOptions o;
  o.socket = daemon.socket();
  auto c = client::Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return r;
  r.client = std::move(*c);
  auto joined = r.client->Join(channel, capability);
  EXPECT_TRUE(joined.ok()) << joined.status();
  if (joined.ok()) r.channel = *joined;
  return r;
}

// snapshot_dir: the chosen channel is written every interval and at stop,
// only the newest `keep` stay, and a daemon whose state directory was
// emptied (a reboot of a tmpfs) restores it from the newest one that is
// intact.
TEST(PeriodicSnapshotTest, ChosenChannelsAreKeptAcrossALostStateDirectory) {
  TempDir scratch;
  const std::string snaps = scratch.Sub("snapshots");
  DaemonProcess daemon({"--snapshot-dir", snaps, "--snapshot-interval-s", "1",
                        "--snapshot-keep", "2", "--snapshot-channels", "kept"});
  std::string owner;
  {
    client::ClientOptions o;
    o.socket = daemon.socket();
    auto c = client::Client::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status();
    auto kept = (*c)->CreateChannel("kept");
    auto other = (*c)->CreateChannel("other");
    ASSERT_TRUE(kept.ok() && other.ok());
    owner = kept->owner_capability;
    auto counter = kept->channel->Allocate<Counter>();
    ASSERT_TRUE(counter.ok());
    (*counter)->hits().store(41);
    ASSERT_TRUE(kept->channel->SetRoot("c", counter->ref()).ok());
    ASSERT_TRUE(Eventually([&] { return SnapshotsIn(snaps, "kept").size() >= 2; }));
    // Rounds go on; two stay.
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    EXPECT_EQ(SnapshotsIn(snaps, "kept").size(), 2u);
    EXPECT_TRUE(SnapshotsIn(snaps, "other").empty());
    (*counter)->hits().store(42);
  }
  EXPECT_EQ(daemon.Stop(), 0);  // writes a last round
  std::vector<std::string> before = SnapshotsIn(snaps, "kept");
  ASSERT_EQ(before.size(), 2u);

  {
    Rebooted r = RebootAndJoin(daemon, "kept", owner);
    ASSERT_TRUE(r.channel);
    auto root = r.channel->GetRoot("c");
    ASSERT_TRUE(root.ok()) << root.status();
    EXPECT_EQ(r.channel->View<Counter>(*root)->hits().load(), 42u);  // as of the stop
    EXPECT_EQ(r.client->Join("other", owner).status().code(), absl::StatusCode::kNotFound);
  }
  EXPECT_THAT(daemon.Log(), HasSubstr("restored from " + snaps + "/" + before[1]));

  // Again, with the newest snapshot damaged: the one before it is used.
  EXPECT_EQ(daemon.Stop(), 0);
  std::vector<std::string> now = SnapshotsIn(snaps, "kept");
  ASSERT_EQ(now.size(), 2u);
  FlipBit(snaps + "/" + now[1] + "/extent.0", 100);
  {
    Rebooted r = RebootAndJoin(daemon, "kept", owner);
    ASSERT_TRUE(r.channel);
    EXPECT_TRUE(r.channel->GetRoot("c").ok());
  }
  const std::string log = daemon.Log();
  EXPECT_THAT(log, HasSubstr("from " + snaps + "/" + now[1] + " failed: DATA_LOSS"));
  EXPECT_THAT(log, HasSubstr("restored from " + snaps + "/" + now[0]));
}

TEST(PeriodicSnapshotTest, BadSettingsAreRefusedAtStart) {
  std::string out;
  EXPECT_NE(RunDaemonToCompletion({"--check-config", "--snapshot-keep", "0"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("snapshot_keep must be >= 1"));
  out.clear();
  EXPECT_NE(RunDaemonToCompletion({"--check-config", "--snapshot-dir", "relative/dir"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("not an absolute path"));
  out.clear();
  EXPECT_NE(
      RunDaemonToCompletion({"--check-config", "--snapshot-channels", "ok,bad name"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("snapshot_channels: channel name 'bad name'"));
}

}  // namespace
}  // namespace structd::testing
