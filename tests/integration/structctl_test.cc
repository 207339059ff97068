// structctl against a real daemon and real clients: --json output parsed
// (with protobuf's JSON parser into google.protobuf.Value) and checked
// against what the clients did; every exit code exercised.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <thread>

#include "structd/v1/instances.grpc.pb.h"
#include "testing/client_types.h"
#include "testing/grpc_client.h"
#include "testing/structctl_fixture.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;
using google::protobuf::Value;

#define PADDED_FIELDS(F) F(flag, u8) F(total, u64) F(tag, u16)
STRUCTD_STRUCT(Padded, PADDED_FIELDS);

using StructctlTest = StructctlFixture;

TEST_F(StructctlTest, JsonShowsCountsLayoutsRootsAndDecodedValues) {
  auto vectors = c().AllocateBatch<Vector>(3);
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  (*vectors)[0]->x().store(1.5);
  (*vectors)[0]->y().store(-2);
  ASSERT_TRUE(c().SetRoot("origin", (*vectors)[0].ref()).ok());
  auto padded = c().Allocate<Padded>();
  ASSERT_TRUE(padded.ok()) << padded.status();
  auto vector_type = c().Use<Vector>();
  ASSERT_TRUE(vector_type.ok());
  c().ReleaseSpares();  // counts below are of what the test made

  Value status = Json({"status"});
  EXPECT_EQ(Get(status, "channels").number_value(), 1);
  EXPECT_EQ(Get(status, "live_instances").number_value(), 4);
  EXPECT_EQ(Get(status, "sessions").number_value(), 1);
  EXPECT_EQ(Get(Get(status, "arenas").list_value().values(0), "epoch").string_value().size(), 16u);

  Value channels = Json({"channels"});
  const Value& shop = Get(channels, "channels").list_value().values(0);
  EXPECT_EQ(Get(shop, "name").string_value(), "shop");
  EXPECT_EQ(Get(shop, "types").number_value(), 2);
  EXPECT_EQ(Get(shop, "roots").number_value(), 1);

  Value types = Json({"types", "shop"});
  ASSERT_EQ(Get(types, "types").list_value().values_size(), 2);
  const Value& vt = Get(types, "types").list_value().values(0);
  EXPECT_EQ(Get(vt, "key").string_value(), "Vector");
  EXPECT_EQ(Get(vt, "size").number_value(), 16);
  char fp[17];
  std::snprintf(fp, sizeof fp, "%016llx",
                static_cast<unsigned long long>(vector_type->layout.fingerprint()));
  EXPECT_EQ(Get(vt, "fingerprint").string_value(), fp);

  // Layout with holes, found by key: u8 at 0, 7 bytes hole, u64 at 8, u16
  // at 16, 6 bytes of tail padding.
  Value layout = Json({"layout", "Padded"});
  EXPECT_EQ(Get(layout, "size").number_value(), 24);
  EXPECT_EQ(Get(layout, "holes").number_value(), 7);
  EXPECT_EQ(Get(layout, "tail_padding").number_value(), 6);
  const auto& fields = Get(layout, "fields").list_value();
  EXPECT_EQ(Get(fields.values(0), "hole_after").number_value(), 7);
  EXPECT_EQ(Get(fields.values(1), "offset").number_value(), 8);
  EXPECT_EQ(Get(fields.values(2), "type").string_value(), "u16");

  Value instances = Json({"instances", "shop", "--type", "Vector", "--limit", "10"});
  EXPECT_EQ(Get(Get(instances, "counts").list_value().values(0), "count").number_value(), 3);
  EXPECT_EQ(Get(instances, "instances").list_value().values_size(), 3);

  Value inspect = Json({"inspect", (*vectors)[0].ref().ToString()});
  const Value& inst = Get(inspect, "instance");
  EXPECT_EQ(Get(inst, "key").string_value(), "Vector");
  EXPECT_EQ(Get(inst, "refcount").number_value(), 2);  // Owned + root
  const auto& values = Get(inst, "fields").list_value();
  EXPECT_EQ(Get(values.values(0), "name").string_value(), "x");
  EXPECT_EQ(Get(values.values(0), "value").string_value(), "1.5");
  EXPECT_EQ(Get(values.values(1), "value").string_value(), "-2");

  Value roots = Json({"roots", "shop"});
  const Value& origin = Get(roots, "roots").list_value().values(0);
  EXPECT_EQ(Get(origin, "name").string_value(), "origin");
  EXPECT_EQ(Get(origin, "ref").string_value(), (*vectors)[0].ref().ToString());

  Value memory = Json({"memory", "shop"});
  EXPECT_GE(Get(memory, "extents").number_value(), 1);
  EXPECT_GT(Get(memory, "live_bytes").number_value(), 0);

  Value sessions = Json({"sessions"});
  const Value& me = Get(sessions, "sessions").list_value().values(0);
  EXPECT_EQ(Get(me, "pid").number_value(), getpid());
  EXPECT_EQ(Get(me, "refs_held").number_value(), 4);

  Value health = Json({"health"});
  EXPECT_EQ(Get(health, "status").string_value(), "SERVING");
}

// Issue 18: ports in structctl, with messages moved through the daemon by
// a client in another language would (the gRPC calls of instances.proto).
TEST_F(StructctlTest, PortsShowCapacityDepthAndMessagesInAndOut) {
  auto port = c().CreatePort("jobs", 8);
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(port->capacity, 8u);
  EXPECT_EQ(c().CreatePort("jobs", 8).status().code(), absl::StatusCode::kAlreadyExists);
  auto vector_type = c().Use<Vector>();
  ASSERT_TRUE(vector_type.ok());

  GrpcClient other(daemon_.target());
  ASSERT_TRUE(other.Join("shop", created_.member_capability));
  v1::AllocateBatchRequest alloc;
  alloc.set_channel("shop");
  alloc.set_token(vector_type->token.ToHex());
  alloc.set_count(3);
  v1::AllocateBatchResponse refs;
  ASSERT_TRUE(other.instances().AllocateBatch(other.Ctx().get(), alloc, &refs).ok());
  v1::SendToPortRequest send;
  send.set_channel("shop");
  send.set_name("jobs");
  *send.mutable_refs() = refs.refs();
  v1::SendToPortResponse sent;
  grpc::Status st = other.instances().SendToPort(other.Ctx().get(), send, &sent);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(sent.sent(), 3u);
  v1::ReceiveFromPortRequest receive;
  receive.set_channel("shop");
  receive.set_name("jobs");
  receive.set_max(1);
  v1::ReceiveFromPortResponse got;
  st = other.instances().ReceiveFromPort(other.Ctx().get(), receive, &got);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(got.refs_size(), 1);
  EXPECT_EQ(got.refs(0), refs.refs(0)) << "oldest first";

  Value ports = Json({"ports", "shop"});
  ASSERT_EQ(Get(ports, "ports").list_value().values_size(), 1);
  const Value& jobs = Get(ports, "ports").list_value().values(0);
  EXPECT_EQ(Get(jobs, "name").string_value(), "jobs");
  EXPECT_EQ(Get(jobs, "capacity").number_value(), 8);
  EXPECT_EQ(Get(jobs, "depth").number_value(), 2);
  EXPECT_EQ(Get(jobs, "sent").number_value(), 3);
  EXPECT_EQ(Get(jobs, "received").number_value(), 1);
  EXPECT_EQ(Get(jobs, "receivers_waiting").number_value(), 0);

  CtlRun table = Structctl({"ports", "shop"});
  EXPECT_EQ(table.code, 0);
  EXPECT_THAT(table.out, HasSubstr("2/8"));
  CtlRun watch = Structctl({"watch", "--count", "1"});
  EXPECT_EQ(watch.code, 0);
  EXPECT_THAT(watch.out, HasSubstr("jobs"));

  Value check = Json({"check", "shop"});
  EXPECT_TRUE(Get(check, "ok").bool_value()) << "the port's messages are counted";
}

TEST_F(StructctlTest, HumanTablesAreAligned) {
  auto v = c().Allocate<Vector>();
  ASSERT_TRUE(v.ok());
  CtlRun r = Structctl({"channels"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("NAME"));
  EXPECT_THAT(r.out, HasSubstr("shop"));
  r = Structctl({"layout", "Vector"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("struct Vector {"));
  EXPECT_THAT(r.out, HasSubstr("/* size: 16, align: 8, holes: 0 bytes"));
  r = Structctl({"watch", "--count", "2", "--interval", "0.05"});
  EXPECT_EQ(r.code, 0);
  size_t first = r.out.find("structd ");
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(r.out.find("structd ", first + 1), std::string::npos) << r.out;  // twice
}

TEST_F(StructctlTest, CheckPassesOnAHealthyArenaAndNamesADamagedInstance) {
  auto nodes = c().AllocateBatch<Node>(5);
  ASSERT_TRUE(nodes.ok());
  c().ReleaseSpares();
  CtlRun ok = Structctl({"check", "shop"});
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_THAT(ok.out, HasSubstr("ok (5 instances checked)"));
  // Damage one refcount on purpose.
  client::Ref victim = (*nodes)[3].ref();
  c().arena().Resolve(victim)->header().refcount.store(7);
  CtlRun bad = Structctl({"check", "shop"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.out, HasSubstr(victim.ToString()));
  EXPECT_THAT(bad.out, HasSubstr("refcount 7"));
  Value report;
  CtlRun json = Structctl({"--json", "check", "shop"});
  EXPECT_EQ(json.code, 1);
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &report).ok()) << json.out;
  EXPECT_FALSE(Get(report, "ok").bool_value());
  EXPECT_EQ(Get(Get(report, "problems").list_value().values(0), "ref").string_value(),
            victim.ToString());
  c().arena().Resolve(victim)->header().refcount.store(1);  // repair for teardown
}

// An operator sees each quota's use and drops a channel without its owner
// capability; the arena goes when the last joined session leaves.
TEST_F(StructctlTest, StatusShowsQuotasAndDropReclaimsAChannel) {
  Value status = Json({"status"});
  bool found_uid_quota = false;
  for (const Value& q : Get(status, "quotas").list_value().values()) {
    if (Get(q, "quota").string_value() == "max_bytes_per_uid" &&
        Get(q, "uid").number_value() == static_cast<double>(getuid())) {
      found_uid_quota = true;
      EXPECT_EQ(Get(q, "used").number_value(), 1048576.0);  // one 1 MiB extent
      EXPECT_GT(Get(q, "limit").number_value(), 0.0);
    }
  }
  EXPECT_TRUE(found_uid_quota) << "no max_bytes_per_uid entry for this uid";
  CtlRun human = Structctl({"status"});
  EXPECT_THAT(human.out, HasSubstr("max_channels_per_uid"));

  Value dropped = Json({"drop", "shop"});
  EXPECT_EQ(Get(dropped, "sessions").number_value(), 1.0);  // this client is joined
  EXPECT_EQ(Structctl({"types", "shop"}).code, 1);           // gone from the directory
  EXPECT_EQ(Structctl({"drop", "shop"}).code, 1);            // NOT_FOUND now
  created_ = {};
  client_.reset();  // the last session leaves: the arena is deleted
  for (int i = 0; i < 100 && Structctl({"channels"}).out.find("shop") != std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Structctl({"channels"}).out.find("shop"), std::string::npos);
}

TEST_F(StructctlTest, EveryExitCode) {
  EXPECT_EQ(Structctl({"status"}).code, 0);
  EXPECT_EQ(Structctl({"types", "no-such-channel"}).code, 1);     // the daemon said NOT_FOUND
  EXPECT_EQ(Structctl({"inspect", "not-a-ref"}).code, 2);         // usage
  EXPECT_EQ(Structctl({"types"}).code, 2);                        // missing argument
  EXPECT_EQ(Structctl({"--no-such-flag", "status"}).code, 2);
  EXPECT_EQ(Structctl({}).code, 2);                               // no command
  EXPECT_EQ(Structctl({"--help"}, false).code, 0);
  EXPECT_EQ(Structctl({"--socket", "/nonexistent/structd.sock", "status"}, false).code, 3);
  client_.reset();
  daemon_.Stop();
  EXPECT_EQ(Structctl({"health"}).code, 3);
}

}  // namespace
}  // namespace structd::testing
