// The gRPC services called directly, in-process, without a server or a
// socket: what each handler translates (metadata, peer credentials,
// request fields) and which status it returns. Behavior behind the
// translation is the core's and is tested in core_test.cc; the full
// stack over a real socket is tests/integration/daemon_test.cc.

#include "rpc/services.h"

#include <grpcpp/test/server_context_test_spouse.h>
#include <unistd.h>

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/temp_dir.h"

namespace structd::server {
namespace {

using ::testing::HasSubstr;

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoreOptions o;
    o.state_dir = dir_.path();
    o.arena.extent_size = 1 << 20;
    o.arena.max_extents = 4;
    auto c = Core::Open(o);
    ASSERT_TRUE(c.ok()) << c.status();
    core_ = std::move(*c);
    me_ = {true, getpid(), getuid(), getgid(), ProcessHandle::OfPid(getpid())};
    // Handlers called in-process see the peer "".
    peers_.RecordPeer("", me_);
    auto s = core_->Attach(me_, "services-test");
    ASSERT_TRUE(s.ok()) << s.status();
    session_ = s->id;
  }

  // A server context as an attached client's call would arrive.
  struct Call {
    grpc::ServerContext context;
    grpc::testing::ServerContextTestSpouse spouse{&context};
  };
  std::unique_ptr<Call> WithSession(const std::string& session) {
    auto call = std::make_unique<Call>();
    if (!session.empty()) call->spouse.AddClientMetadata("structd-session", session);
    return call;
  }
  std::unique_ptr<Call> Caller() { return WithSession(session_); }

  structd::testing::TempDir dir_;
  std::unique_ptr<Core> core_;
  PeerTable peers_;
  PeerCredentials me_;
  std::string session_;
};

TEST_F(ServicesTest, RegistryHandlersFillEveryReplyField) {
  RegistryService registry(core_.get(), &peers_);
  v1::CreateChannelRequest create;
  create.set_name("orders");
  v1::CreateChannelResponse created;
  grpc::Status s = registry.CreateChannel(&Caller()->context, &create, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(created.owner_capability().size(), 32u);
  EXPECT_EQ(created.member_capability().size(), 32u);
  EXPECT_FALSE(created.channel_id().empty());
  EXPECT_EQ(created.arena().extent_size(), 1u << 20);
  EXPECT_EQ(created.arena().max_extents(), 4u);
  EXPECT_GE(created.arena().extent_count(), 1u);
  EXPECT_NE(created.arena().epoch(), 0u);

  v1::RegisterTypeRequest reg;
  reg.set_channel("orders");
  reg.set_key("Order");
  auto* f = reg.add_fields();
  f->set_name("price");
  f->set_type("f64");
  f = reg.add_fields();
  f->set_name("sym");
  f->set_type("string[8]");
  v1::RegisterTypeResponse registered;
  s = registry.RegisterType(&Caller()->context, &reg, &registered);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(registered.type().token().size(), 32u);
  EXPECT_EQ(registered.type().key(), "Order");
  ASSERT_EQ(registered.type().layout().fields_size(), 2);
  EXPECT_EQ(registered.type().layout().fields(1).type(), "string[8]");
  EXPECT_EQ(registered.type().layout().fields(1).offset(), 8u);

  v1::DescribeTypeRequest describe;
  describe.set_channel("orders");
  describe.set_token(registered.type().token());
  v1::DescribeTypeResponse described;
  s = registry.DescribeType(&Caller()->context, &describe, &described);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(described.type().layout().fingerprint(),
            registered.type().layout().fingerprint());
}

TEST_F(ServicesTest, SessionMetadataAndPeerCredentialsAreChecked) {
  RegistryService registry(core_.get(), &peers_);
  v1::CreateChannelRequest create;
  create.set_name("c");
  v1::CreateChannelResponse created;
  // No session metadata.
  grpc::Status s = registry.CreateChannel(&WithSession("")->context, &create, &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  // A session id nobody was given.
  s = registry.CreateChannel(&WithSession(std::string(32, 'a'))->context, &create,
                             &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  // The right id, presented by another process.
  peers_.RecordPeer("", {true, getpid() + 1, getuid(), getgid()});
  s = registry.CreateChannel(&Caller()->context, &create, &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  // Unknown credentials.
  peers_.RecordPeer("", {});
  s = registry.CreateChannel(&Caller()->context, &create, &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  peers_.RecordPeer("", me_);
  s = registry.CreateChannel(&Caller()->context, &create, &created);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ServicesTest, RequestFieldsAreValidatedBeforeTheCoreActs) {
  RegistryService registry(core_.get(), &peers_);
  InstancesService instances(core_.get(), &peers_);
  v1::CreateChannelRequest create;
  create.set_name("c");
  v1::CreateChannelResponse created;
  ASSERT_TRUE(registry.CreateChannel(&Caller()->context, &create, &created).ok());

  v1::AllocateBatchRequest alloc;
  alloc.set_channel("c");
  alloc.set_token("not-hex");
  alloc.set_count(1);
  v1::AllocateBatchResponse allocated;
  grpc::Status s = instances.AllocateBatch(&Caller()->context, &alloc, &allocated);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("32 hex digits"));
  alloc.set_token(std::string(32, '0'));
  s = instances.AllocateBatch(&Caller()->context, &alloc, &allocated);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();

  v1::ReleaseRequest release;
  release.set_channel("c");
  release.add_refs(~uint64_t{0});
  v1::ReleaseResponse released;
  s = instances.Release(&Caller()->context, &release, &released);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  v1::RegisterTypeRequest reg;
  reg.set_channel("c");
  reg.set_key("T");
  auto* f = reg.add_fields();
  f->set_name("x");
  f->set_type("u65");
  v1::RegisterTypeResponse registered;
  s = registry.RegisterType(&Caller()->context, &reg, &registered);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("u65"));
  // Nothing was registered by the failed call.
  v1::ListTypesRequest list;
  list.set_channel("c");
  v1::ListTypesResponse listed;
  ASSERT_TRUE(registry.ListTypes(&Caller()->context, &list, &listed).ok());
  EXPECT_EQ(listed.types_size(), 0);
}

TEST_F(ServicesTest, AdminIsForRootOrTheAdminCapability) {
  AdminService admin(core_.get(), &peers_,
                     {"test-version", "/sock", dir_.path(),
                      std::chrono::steady_clock::now()});
  peers_.RecordPeer("", {true, getpid(), 0, 0});  // root
  v1::GetStatusRequest req;
  v1::GetStatusResponse resp;
  grpc::Status s = admin.GetStatus(&Caller()->context, &req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.version(), "test-version");
  EXPECT_EQ(resp.sessions(), 1u);
  EXPECT_EQ(resp.pid(), static_cast<uint32_t>(getpid()));

  // Any other uid, the daemon's own included: refused.
  for (uid_t uid : {getuid() == 0 ? uid_t{1000} : getuid(), uid_t{61001}}) {
    peers_.RecordPeer("", {true, getpid(), uid, getgid()});
    s = admin.GetStatus(&Caller()->context, &req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("admin capability"));
  }
  // ... unless it presents the admin capability the core wrote for this
  // start (readable by the daemon's uid only).
  std::string capability;
  std::ifstream(dir_.path() + "/admin.capability") >> capability;
  ASSERT_EQ(capability.size(), 32u);
  auto wrong = Caller();
  wrong->spouse.AddClientMetadata("structd-admin", std::string(32, 'd'));
  EXPECT_EQ(admin.GetStatus(&wrong->context, &req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  auto right = Caller();
  right->spouse.AddClientMetadata("structd-admin", capability);
  EXPECT_TRUE(admin.GetStatus(&right->context, &req, &resp).ok());
}

}  // namespace
}  // namespace structd::server
