// The daemon over its real gRPC API: a structd child process per test with
// its own socket and state directory.

#include <unistd.h>

#include <filesystem>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

#include <grpcpp/generic/generic_stub.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "structd/shm/arena.h"
#include "structd/shm/field.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/spawned_process.h"

namespace structd {
namespace {

using ::testing::HasSubstr;
using structd::testing::DaemonProcess;
using structd::testing::GrpcClient;

struct Channel {
  std::string id, owner, member;
  v1::ArenaInfo arena;
};

Channel Create(GrpcClient& c, const std::string& name) {
  v1::CreateChannelRequest req;
  req.set_name(name);
  v1::CreateChannelResponse resp;
  grpc::Status s = c.registry().CreateChannel(c.Ctx().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return {resp.channel_id(), resp.owner_capability(), resp.member_capability(),
          resp.arena()};
}

v1::TypeInfo Register(GrpcClient& c, const std::string& channel,
                      const std::string& key,
                      std::vector<std::pair<std::string, std::string>> fields,
                      grpc::Status* status = nullptr) {
  v1::RegisterTypeRequest req;
  req.set_channel(channel);
  req.set_key(key);
  for (auto& [n, t] : fields) {
    auto* f = req.add_fields();
    f->set_name(n);
    f->set_type(t);
  }
  v1::RegisterTypeResponse resp;
  grpc::Status s = c.registry().RegisterType(c.Ctx().get(), req, &resp);
  if (status) *status = s;
  return resp.type();
}

std::vector<uint64_t> Alloc(GrpcClient& c, const std::string& channel,
                            const std::string& token, uint32_t n,
                            grpc::Status* status = nullptr) {
  v1::AllocateBatchRequest req;
  req.set_channel(channel);
  req.set_token(token);
  req.set_count(n);
  v1::AllocateBatchResponse resp;
  grpc::Status s = c.instances().AllocateBatch(c.Ctx().get(), req, &resp);
  if (status) *status = s;
  return {resp.refs().begin(), resp.refs().end()};
}

TEST(DaemonTest, ClientsShareFieldsThroughTheArenaTheDaemonCreated) {
  DaemonProcess daemon;
  GrpcClient a(daemon.target());
  Channel ch = Create(a, "counters");
  grpc::Status s;
  v1::TypeInfo t = Register(a, "counters", "Counter", {{"hits", "u64"}}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(t.layout().size(), 8u);
  std::vector<uint64_t> refs = Alloc(a, "counters", t.token(), 3, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(refs.size(), 3u);

  // Another client joins with the member capability and maps the arena.
  GrpcClient b(daemon.target());
  v1::JoinChannelRequest join;
  join.set_channel("counters");
  join.set_capability(ch.member);
  v1::JoinChannelResponse joined;
  ASSERT_TRUE(b.registry().JoinChannel(b.Ctx().get(), join, &joined).ok());
  EXPECT_EQ(joined.role(), v1::ROLE_MEMBER);
  EXPECT_EQ(joined.arena().path(), "");  // no path: descriptors only
  auto arena = b.MapArena("counters");
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ((*arena)->epoch(), joined.arena().epoch());
  auto inst = (*arena)->Resolve(shm::Ref::FromBits(refs[1]));
  ASSERT_TRUE(inst.ok()) << inst.status();
  shm::Scalar<uint64_t>(inst->payload()).fetch_add(41);
  shm::Scalar<uint64_t>(inst->payload()).fetch_add(1);
  auto mine = a.MapArena("counters", shm::Access::kReadOnly);
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(shm::Scalar<uint64_t>((*mine)->Resolve(shm::Ref::FromBits(refs[1]))
                                      ->payload())
                .load(),
            42u);
}

TEST(DaemonTest, EndingASessionReleasesItsReferences) {
  DaemonProcess daemon;
  GrpcClient owner(daemon.target());
  Channel ch = Create(owner, "ch");
  v1::TypeInfo t = Register(owner, "ch", "N", {{"v", "u64"}, {"next", "ref"}});
  std::vector<uint64_t> kept = Alloc(owner, "ch", t.token(), 1);
  {
    GrpcClient worker(daemon.target());
    v1::JoinChannelRequest join;
    join.set_channel("ch");
    join.set_capability(ch.member);
    v1::JoinChannelResponse joined;
    ASSERT_TRUE(worker.registry().JoinChannel(worker.Ctx().get(), join, &joined).ok());
    Alloc(worker, "ch", t.token(), 50);
    v1::RetainRequest retain;
    retain.set_channel("ch");
    retain.add_refs(kept[0]);
    v1::RetainResponse rr;
    ASSERT_TRUE(worker.instances().Retain(worker.Ctx().get(), retain, &rr).ok());
    EXPECT_EQ(owner.LiveInstances("ch"), 51u);
  }  // the worker's stream closes
  for (int i = 0; i < 500 && owner.LiveInstances("ch") != 1u; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(owner.LiveInstances("ch"), 1u);
  auto arena = owner.MapArena("ch", shm::Access::kReadOnly);
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ((*arena)->Resolve(shm::Ref::FromBits(kept[0]))->header().refcount.load(),
            1u);
}

// A client that stays connected but never heartbeats (hung while alive)
// loses its session once the lease runs out; its references go with it.
// Issue 13.4: the lease used to end the session of a process that was only
// silent (SIGSTOP, a debugger, this test client that never heartbeats),
// free its blocks and hand them to others while it could still write
// them. A live process keeps its session; the lease ends only sessions
// whose process is gone (DaemonClientKillTest, KillMatrixTest).
TEST(DaemonTest, ASilentButLiveClientKeepsItsSessionPastTheLease) {
  DaemonProcess daemon({"--lease-ms", "300"});
  GrpcClient observer(daemon.target(), /*attach=*/false);
  GrpcClient hung(daemon.target());  // the test client never heartbeats
  Create(hung, "ch");
  v1::TypeInfo t = Register(hung, "ch", "N", {{"v", "u64"}});
  grpc::Status s;
  Alloc(hung, "ch", t.token(), 7, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(observer.LiveInstances("ch"), 7u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // 4 leases
  EXPECT_EQ(observer.LiveInstances("ch"), 7u);
  Alloc(hung, "ch", t.token(), 1, &s);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(observer.LiveInstances("ch"), 8u);
}

TEST(DaemonTest, CapabilitiesTokensAndSealingGiveTheirDocumentedCodes) {
  DaemonProcess daemon;
  GrpcClient a(daemon.target());
  Channel c1 = Create(a, "one");
  Channel c2 = Create(a, "two");
  v1::TypeInfo t1 = Register(a, "one", "P", {{"x", "f64"}});
  GrpcClient b(daemon.target());
  v1::JoinChannelRequest join;
  join.set_channel("one");
  join.set_capability(c2.owner);  // another channel's capability
  v1::JoinChannelResponse jr;
  EXPECT_EQ(b.registry().JoinChannel(b.Ctx().get(), join, &jr).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // A token of channel "one" used in channel "two": NOT_FOUND, like a
  // guessed one.
  v1::DescribeTypeRequest d;
  d.set_channel("two");
  d.set_token(t1.token());
  v1::DescribeTypeResponse dr;
  grpc::Status foreign = a.registry().DescribeType(a.Ctx().get(), d, &dr);
  d.set_token(std::string(32, 'a'));
  grpc::Status guessed = a.registry().DescribeType(a.Ctx().get(), d, &dr);
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(guessed.error_code(), grpc::StatusCode::NOT_FOUND);
  // Same key, different layout: FAILED_PRECONDITION showing both.
  grpc::Status s;
  Register(a, "one", "P", {{"x", "f32"}}, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("registered:"));
  // Sealing needs the owner capability, then stops new keys.
  v1::SealRegistryRequest seal;
  seal.set_channel("one");
  seal.set_owner_capability(c1.member);
  v1::SealRegistryResponse sr;
  EXPECT_EQ(a.registry().SealRegistry(a.Ctx().get(), seal, &sr).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  seal.set_owner_capability(c1.owner);
  ASSERT_TRUE(a.registry().SealRegistry(a.Ctx().get(), seal, &sr).ok());
  Register(a, "one", "Q", {{"x", "f64"}}, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("sealed"));
}

TEST(DaemonTest, StaleAndForgedRefsGiveTheirDocumentedCodes) {
  DaemonProcess daemon;
  GrpcClient a(daemon.target());
  Create(a, "ch");
  v1::TypeInfo t = Register(a, "ch", "N", {{"v", "u64"}});
  std::vector<uint64_t> refs = Alloc(a, "ch", t.token(), 1);
  v1::ReleaseRequest rel;
  rel.set_channel("ch");
  rel.add_refs(refs[0]);
  v1::ReleaseResponse rr;
  ASSERT_TRUE(a.instances().Release(a.Ctx().get(), rel, &rr).ok());
  EXPECT_EQ(rr.freed(), 1u);
  v1::RetainRequest ret;
  ret.set_channel("ch");
  ret.add_refs(refs[0]);
  v1::RetainResponse retr;
  grpc::Status stale = a.instances().Retain(a.Ctx().get(), ret, &retr);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(stale.error_message(), HasSubstr("stale"));
  ret.set_refs(0, 0x123456789abcdef0ull);
  grpc::Status forged = a.instances().Retain(a.Ctx().get(), ret, &retr);
  EXPECT_EQ(forged.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Releasing a freed ref is NOT_FOUND; releasing a live ref more often
  // than the session owns it is FAILED_PRECONDITION, and changes nothing.
  EXPECT_EQ(a.instances().Release(a.Ctx().get(), rel, &rr).error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::vector<uint64_t> live = Alloc(a, "ch", t.token(), 1);
  rel.set_refs(0, live[0]);
  rel.add_refs(live[0]);
  EXPECT_EQ(a.instances().Release(a.Ctx().get(), rel, &rr).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(a.LiveInstances("ch"), 1u);
}

TEST(DaemonTest, MalformedRequestsGetClearErrorsAndTheDaemonKeepsAnswering) {
  DaemonProcess daemon;
  GrpcClient a(daemon.target());
  Create(a, "ch");
  GrpcClient b(daemon.target());
  Create(b, "other");  // a has not joined it
  v1::TypeInfo t = Register(a, "ch", "N", {{"v", "u64"}});
  struct Case {
    const char* what;
    std::function<grpc::Status()> call;
    grpc::StatusCode code;
  };
  GrpcClient anon(daemon.target(), /*attach=*/false);
  std::vector<Case> cases = {
      {"no session",
       [&] {
         v1::ListTypesRequest r;
         r.set_channel("ch");
         v1::ListTypesResponse resp;
         return anon.registry().ListTypes(anon.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::UNAUTHENTICATED},
      {"bad channel name",
       [&] {
         v1::CreateChannelRequest r;
         r.set_name("no spaces allowed");
         v1::CreateChannelResponse resp;
         return a.registry().CreateChannel(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"bad extent size",
       [&] {
         v1::CreateChannelRequest r;
         r.set_name("odd");
         r.mutable_arena()->set_extent_size(1000);
         v1::CreateChannelResponse resp;
         return a.registry().CreateChannel(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"unknown channel",
       [&] {
         v1::JoinChannelRequest r;
         r.set_channel("nope");
         v1::JoinChannelResponse resp;
         return a.registry().JoinChannel(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::NOT_FOUND},
      {"bad field type",
       [&] {
         grpc::Status s;
         Register(a, "ch", "B", {{"x", "int"}}, &s);
         return s;
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"no fields",
       [&] {
         grpc::Status s;
         Register(a, "ch", "E", {}, &s);
         return s;
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"empty key",
       [&] {
         grpc::Status s;
         Register(a, "ch", "", {{"x", "u8"}}, &s);
         return s;
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"malformed token",
       [&] {
         grpc::Status s;
         Alloc(a, "ch", "xyz", 1, &s);
         return s;
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"batch of zero",
       [&] {
         grpc::Status s;
         Alloc(a, "ch", t.token(), 0, &s);
         return s;
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"batch too large",
       [&] {
         grpc::Status s;
         Alloc(a, "ch", t.token(), 2000000, &s);
         return s;
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"empty release",
       [&] {
         v1::ReleaseRequest r;
         r.set_channel("ch");
         v1::ReleaseResponse resp;
         return a.instances().Release(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"no stores",
       [&] {
         v1::StoreRefsRequest r;
         r.set_channel("ch");
         v1::StoreRefsResponse resp;
         return a.instances().StoreRefs(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"store into a forged target",
       [&] {
         v1::StoreRefsRequest r;
         r.set_channel("ch");
         r.add_stores()->set_target(0x123456789abcdef0ull);
         v1::StoreRefsResponse resp;
         return a.instances().StoreRefs(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"bad root name",
       [&] {
         v1::SetRootRequest r;
         r.set_channel("ch");
         r.set_name("has space");
         v1::SetRootResponse resp;
         return a.instances().SetRoot(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"missing root",
       [&] {
         v1::GetRootRequest r;
         r.set_channel("ch");
         r.set_name("absent");
         v1::GetRootResponse resp;
         return a.instances().GetRoot(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::NOT_FOUND},
      {"describe with malformed token",
       [&] {
         v1::DescribeTypeRequest r;
         r.set_channel("ch");
         r.set_token("not-hex");
         v1::DescribeTypeResponse resp;
         return a.registry().DescribeType(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"list types of unknown channel",
       [&] {
         v1::ListTypesRequest r;
         r.set_channel("ghost");
         v1::ListTypesResponse resp;
         return a.registry().ListTypes(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::NOT_FOUND},
      {"seal with wrong capability",
       [&] {
         v1::SealRegistryRequest r;
         r.set_channel("ch");
         r.set_owner_capability("00");
         v1::SealRegistryResponse resp;
         return a.registry().SealRegistry(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::PERMISSION_DENIED},
      {"drop with wrong capability",
       [&] {
         v1::DropChannelRequest r;
         r.set_channel("ch");
         r.set_owner_capability(std::string(32, 'f'));
         v1::DropChannelResponse resp;
         return a.registry().DropChannel(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::PERMISSION_DENIED},
      {"allocate unknown token",
       [&] {
         v1::AllocateRequest r;
         r.set_channel("ch");
         r.set_token(std::string(32, '1'));
         v1::AllocateResponse resp;
         return a.instances().Allocate(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::NOT_FOUND},
      {"empty retain",
       [&] {
         v1::RetainRequest r;
         r.set_channel("ch");
         v1::RetainResponse resp;
         return a.instances().Retain(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"delete missing root",
       [&] {
         v1::DeleteRootRequest r;
         r.set_channel("ch");
         r.set_name("absent");
         v1::DeleteRootResponse resp;
         return a.instances().DeleteRoot(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::NOT_FOUND},
      {"list roots of a channel not joined",
       [&] {
         v1::ListRootsRequest r;
         r.set_channel("other");
         v1::ListRootsResponse resp;
         return a.instances().ListRoots(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::FAILED_PRECONDITION},
      {"inspect a forged ref",
       [&] {
         v1::InspectInstanceRequest r;
         r.set_channel("ch");
         r.set_ref(0xfff0000000000001ull);
         v1::InspectInstanceResponse resp;
         grpc::ClientContext ctx;
         return a.admin().InspectInstance(&ctx, r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"admin on unknown channel",
       [&] {
         v1::CheckArenaRequest r;
         r.set_channel("ghost");
         v1::CheckArenaResponse resp;
         grpc::ClientContext ctx;
         return a.admin().CheckArena(&ctx, r, &resp);
       },
       grpc::StatusCode::NOT_FOUND},
      {"attach without hello",
       [&] {
         grpc::ClientContext ctx;
         auto stream = a.session().Attach(&ctx);
         v1::AttachRequest hb;
         hb.mutable_heartbeat();
         stream->Write(hb);
         stream->WritesDone();
         v1::AttachEvent ev;
         while (stream->Read(&ev)) {
         }
         return stream->Finish();
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"root to null ref",
       [&] {
         v1::SetRootRequest r;
         r.set_channel("ch");
         r.set_name("config");
         v1::SetRootResponse resp;
         return a.instances().SetRoot(a.Ctx().get(), r, &resp);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : cases) {
    grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message();
    EXPECT_FALSE(s.error_message().empty()) << c.what;
    // Still answering.
    v1::ListTypesRequest r;
    r.set_channel("ch");
    v1::ListTypesResponse resp;
    ASSERT_TRUE(a.registry().ListTypes(a.Ctx().get(), r, &resp).ok()) << c.what;
  }
}

TEST(DaemonTest, AdminListsInspectsAndChecksAnArena) {
  DaemonProcess daemon;
  GrpcClient a(daemon.target());
  Channel ch = Create(a, "ch");
  v1::TypeInfo t = Register(a, "ch", "Item", {{"qty", "i32"}, {"name", "string[8]"}});
  std::vector<uint64_t> refs = Alloc(a, "ch", t.token(), 4);
  auto arena = a.MapArena("ch");
  ASSERT_TRUE(arena.ok()) << arena.status();
  auto inst = (*arena)->Resolve(shm::Ref::FromBits(refs[2]));
  shm::Scalar<int32_t>(inst->payload()).store(-5);
  ASSERT_TRUE(shm::BytesField(inst->payload() + 8, 8).Write("bolt").ok());

  v1::ListInstancesRequest li;
  li.set_channel("ch");
  li.set_limit(10);
  v1::ListInstancesResponse lr;
  grpc::ClientContext c1;
  ASSERT_TRUE(a.admin().ListInstances(&c1, li, &lr).ok());
  ASSERT_EQ(lr.counts_size(), 1);
  EXPECT_EQ(lr.counts(0).key(), "Item");
  EXPECT_EQ(lr.counts(0).count(), 4u);
  EXPECT_EQ(lr.instances_size(), 4);

  v1::InspectInstanceRequest ir;
  ir.set_channel("ch");
  ir.set_ref(refs[2]);
  v1::InspectInstanceResponse iresp;
  grpc::ClientContext c2;
  ASSERT_TRUE(a.admin().InspectInstance(&c2, ir, &iresp).ok());
  ASSERT_EQ(iresp.instance().fields_size(), 2);
  EXPECT_EQ(iresp.instance().fields(0).value(), "-5");
  EXPECT_EQ(iresp.instance().fields(1).value(), "\"bolt\"");

  v1::CheckArenaRequest cr;
  cr.set_channel("ch");
  v1::CheckArenaResponse check;
  grpc::ClientContext c3;
  ASSERT_TRUE(a.admin().CheckArena(&c3, cr, &check).ok());
  EXPECT_TRUE(check.ok());
  EXPECT_EQ(check.instances_checked(), 4u);
  inst->header().refcount.store(9);  // damage on purpose
  grpc::ClientContext c4;
  ASSERT_TRUE(a.admin().CheckArena(&c4, cr, &check).ok());
  EXPECT_FALSE(check.ok());
  ASSERT_EQ(check.problems_size(), 1);
  EXPECT_EQ(check.problems(0).ref(), refs[2]);
}

TEST(DaemonTest, ServesTheStandardHealthCheck) {
  DaemonProcess daemon;
  auto channel = grpc::CreateChannel(daemon.target(),
                                     grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Status s = health->Check(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  req.set_service("no.such.Service");
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  s = health->Check(&ctx2, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
}

// Server reflection over a generic stream (Debian does not ship the
// reflection .proto): a list_services request is field 7 = "" on the wire.
TEST(DaemonTest, ServesReflectionListingEveryService) {
  DaemonProcess daemon;
  auto channel = grpc::CreateChannel(daemon.target(),
                                     grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      &cq);
  void* tag;
  bool ok;
  auto next = [&](intptr_t want) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(next(1));
  const char list_services[] = {0x3a, 0x00};
  grpc::Slice slice(list_services, sizeof list_services);
  call->Write(grpc::ByteBuffer(&slice, 1), reinterpret_cast<void*>(2));
  ASSERT_TRUE(next(2));
  grpc::ByteBuffer reply;
  call->Read(&reply, reinterpret_cast<void*>(3));
  ASSERT_TRUE(next(3));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string text;
  for (const auto& sl : slices) text += std::string(sl.begin(), sl.end());
  for (const char* service : {"structd.v1.Session", "structd.v1.Registry",
                              "structd.v1.Instances", "structd.v1.Admin",
                              "grpc.health.v1.Health"}) {
    EXPECT_THAT(text, HasSubstr(service));
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  next(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  next(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST(DaemonTest, ASecondDaemonOnTheSameStateDirRefusesNamingTheFirst) {
  DaemonProcess daemon;
  std::string out;
  int code = structd::testing::RunDaemonToCompletion(
      {"--socket", daemon.socket() + ".2", "--state-dir", daemon.state_dir()},
      &out);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("in use by another structd (pid " +
                             std::to_string(daemon.pid())));
}

// --log-format json: every line the daemon writes is one JSON object.
TEST(DaemonTest, JsonLogsAreOneObjectPerLine) {
  DaemonProcess daemon;
  std::string out;
  int code = structd::testing::RunDaemonToCompletion(
      {"--socket", daemon.socket() + ".2", "--state-dir", daemon.state_dir(),
       "--log-format", "json"},
      &out);
  EXPECT_EQ(code, 1);
  std::istringstream lines(out);
  std::string line;
  int objects = 0;
  bool refused = false;
  while (std::getline(lines, line)) {
    google::protobuf::Struct parsed;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &parsed).ok()) << line;
    ++objects;
    const auto& f = parsed.fields();
    ASSERT_TRUE(f.contains("msg") && f.contains("level") && f.contains("time")) << line;
    if (f.at("level").string_value() == "error" &&
        f.at("msg").string_value().find("in use by another structd") != std::string::npos) {
      refused = true;
    }
  }
  EXPECT_GE(objects, 1);
  EXPECT_TRUE(refused) << out;
  out.clear();
  EXPECT_EQ(structd::testing::RunDaemonToCompletion({"--log-format", "yaml"}, &out), 2);
  EXPECT_THAT(out, HasSubstr("log format 'yaml' is not one of text, json"));
}

// Logs go to stderr (journald takes both, but a pipeline reading the
// daemon's stdout must not get log lines); stdout stays empty.
TEST(DaemonTest, LogsGoToStderrNotStdout) {
  DaemonProcess daemon;
  const std::vector<std::string> second = {structd::testing::DaemonPath(), "--socket",
                                           daemon.socket() + ".2", "--state-dir",
                                           daemon.state_dir()};
  {
    structd::testing::SpawnedProcess p(second);  // stdout only
    std::string out = p.ReadAll(std::chrono::seconds(30));
    EXPECT_EQ(p.Wait(), 1);
    EXPECT_EQ(out, "");
  }
  structd::testing::SpawnedProcess p(second,
                                     structd::testing::SpawnedProcess::Stderr::kWithStdout);
  std::string both = p.ReadAll(std::chrono::seconds(30));
  EXPECT_EQ(p.Wait(), 1);
  EXPECT_THAT(both, HasSubstr("in use by another structd"));
}

TEST(DaemonTest, HelpDocumentsEveryOptionAndBadFlagsAreUsageErrors) {
  std::string out;
  EXPECT_EQ(structd::testing::RunDaemonToCompletion({"--help"}, &out), 0);
  for (const char* opt : {"--socket", "--state-dir", "--config", "--log-level",
                          "--extent-size", "--max-extents", "--lease-ms"}) {
    EXPECT_THAT(out, HasSubstr(opt));
  }
  out.clear();
  EXPECT_EQ(structd::testing::RunDaemonToCompletion({"--no-such-flag"}, &out), 2);
  out.clear();
  EXPECT_EQ(structd::testing::RunDaemonToCompletion({"--log-level", "loud"}, &out),
            2);
  EXPECT_THAT(out, HasSubstr("not one of"));
}

TEST(DaemonTest, AttachedClientsAreToldWhenTheDaemonStops) {
  DaemonProcess daemon;
  GrpcClient client(daemon.target());
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    daemon.Stop();
  });
  v1::AttachEvent last;
  grpc::Status s = client.AwaitAttachEnd(std::chrono::seconds(10), &last);
  stopper.join();
  EXPECT_NE(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(last.has_shutting_down()) << last.DebugString();
}

// After real work: in an ASan build the daemon runs LeakSanitizer before it
// exits, so a leak anywhere on these paths turns the exit status non-zero.
TEST(DaemonTest, SigtermShutsDownCleanlyAndRemovesTheSocket) {
  DaemonProcess daemon;
  std::string socket = daemon.socket();
  {
    GrpcClient client(daemon.target());
    Create(client, "ch");
    v1::TypeInfo t = Register(client, "ch", "N", {{"v", "u64"}, {"next", "ref"}});
    Alloc(client, "ch", t.token(), 1000);
    EXPECT_EQ(client.LiveInstances("ch"), 1000u);
  }  // the session ends and its references are released
  for (int i = 0; i < 500; ++i) {
    GrpcClient admin(daemon.target(), /*attach=*/false);
    if (admin.LiveInstances("ch") == 0u) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(std::filesystem::exists(socket));
}

}  // namespace
}  // namespace structd
