#include "testing/grpc_client.h"

#include "client/src/memory_socket.h"

#include <future>
#include <stdexcept>

namespace structd::testing {

GrpcClient::GrpcClient(const std::string& target, bool attach) {
  channel_ = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  registry_ = v1::Registry::NewStub(channel_);
  instances_ = v1::Instances::NewStub(channel_);
  admin_ = v1::Admin::NewStub(channel_);
  session_ = v1::Session::NewStub(channel_);
  if (!attach) return;
  attach_ctx_ = std::make_unique<grpc::ClientContext>();
  attach_ = session_->Attach(attach_ctx_.get());
  v1::AttachRequest hello;
  hello.mutable_hello()->set_client_name("test");
  v1::AttachEvent ev;
  if (!attach_->Write(hello) || !attach_->Read(&ev) || !ev.has_attached()) {
    throw std::runtime_error("attach failed");
  }
  session_id_ = ev.attached().session_id();
  session_secret_ = ev.attached().session_secret();
  memory_socket_ = ev.attached().memory_socket();
}

absl::StatusOr<v1::CreateChannelResponse> GrpcClient::CreateChannel(const std::string& name) {
  v1::CreateChannelRequest req;
  req.set_name(name);
  v1::CreateChannelResponse resp;
  grpc::Status s = registry_->CreateChannel(Ctx().get(), req, &resp);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return resp;
}

absl::StatusOr<base::UniqueFd> GrpcClient::FetchArenaFile(const std::string& channel,
                                                         shm::ArenaFile file) {
  client::internal::MemorySocket memory(memory_socket_, std::nullopt);
  return memory.Fetch(session_id_, session_secret_, channel, file);
}

absl::StatusOr<std::unique_ptr<shm::Arena>> GrpcClient::MapArena(const std::string& channel,
                                                                 shm::Access access) {
  auto memory = std::make_shared<client::internal::MemorySocket>(memory_socket_, std::nullopt);
  std::string id = session_id_, secret = session_secret_;
  return shm::Arena::OpenFrom(
      [memory, id, secret, channel](shm::ArenaFile file) {
        return memory->Fetch(id, secret, channel, file);
      },
      "channel '" + channel + "'", access);
}

GrpcClient::~GrpcClient() { Detach(); }

bool GrpcClient::Join(const std::string& channel, const std::string& capability,
                      v1::JoinChannelResponse* joined) {
  v1::JoinChannelRequest join;
  join.set_channel(channel);
  join.set_capability(capability);
  v1::JoinChannelResponse local;
  return registry_->JoinChannel(Ctx().get(), join, joined ? joined : &local).ok();
}

grpc::Status GrpcClient::AwaitAttachEnd(std::chrono::milliseconds timeout,
                                        v1::AttachEvent* last_event) {
  if (!attach_) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "not attached");
  auto reader = std::async(std::launch::async, [this, last_event] {
    v1::AttachEvent ev;
    while (attach_->Read(&ev)) {
      if (last_event) *last_event = ev;
    }
    return attach_->Finish();
  });
  bool timed_out = reader.wait_for(timeout) == std::future_status::timeout;
  if (timed_out) attach_ctx_->TryCancel();
  grpc::Status status = reader.get();
  attach_.reset();
  if (timed_out) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "the attach stream did not end in time");
  }
  return status;
}

void GrpcClient::Detach() {
  if (!attach_) return;
  attach_->WritesDone();
  attach_->Finish();
  attach_.reset();
}

grpc::StatusCode GrpcClient::TouchChannel(const std::string& channel) {
  v1::RegisterTypeRequest reg;
  reg.set_channel(channel);
  reg.set_key("T");
  auto* f = reg.add_fields();
  f->set_name("v");
  f->set_type("u64");
  v1::RegisterTypeResponse t;
  return registry_->RegisterType(Ctx().get(), reg, &t).error_code();
}

uint64_t GrpcClient::LiveInstances(const std::string& name) {
  v1::ListChannelsResponse resp;
  grpc::ClientContext ctx;
  if (!admin_->ListChannels(&ctx, {}, &resp).ok()) return ~uint64_t{0};
  for (const auto& ch : resp.channels()) {
    // The program's instances: without the session records the client
    // library opens for itself (one per session that moved references).
    if (ch.name() == name) return ch.live_instances() - ch.session_records();
  }
  return ~uint64_t{0};
}

std::unique_ptr<grpc::ClientContext> GrpcClient::Ctx() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!session_id_.empty()) ctx->AddMetadata("structd-session", session_id_);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

}  // namespace structd::testing
