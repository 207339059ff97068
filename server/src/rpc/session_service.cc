#include "server/src/rpc/services.h"
#include "spdlog/spdlog.h"

namespace structd::server {

grpc::Status SessionService::Attach(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::AttachEvent, v1::AttachRequest>* stream) {
  v1::AttachRequest first;
  if (!stream->Read(&first)) return grpc::Status::OK;  // gone before hello
  if (!first.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "attach: the first message must be hello (send "
                        "AttachRequest.hello, then heartbeats)");
  }
  PeerCredentials peer = peers_->Lookup(context->peer());
  absl::StatusOr<SessionInfo> s =
      core_->Attach(peer, first.hello().client_name(), first.hello().resume_session_id(),
                    first.hello().resume_secret());
  if (!s.ok()) return ToGrpc(s.status());
  v1::AttachEvent attached;
  v1::Attached* a = attached.mutable_attached();
  a->set_session_id(s->id);
  a->set_session_secret(s->secret);
  a->set_pid(static_cast<uint32_t>(s->pid));
  a->set_uid(static_cast<uint32_t>(s->uid));
  a->set_lease_ms(static_cast<uint32_t>(core_->options().lease.count()));
  a->set_daemon_instance(core_->instance_id());
  a->set_daemon_version(STRUCTD_VERSION);
  if (stream->Write(attached)) {
    {
      std::lock_guard lock(mu_);
      live_[s->id] = {context, stream};
    }
    // The session lives as long as this stream: a closed stream, a dead
    // process or Cancel() ends the Read loop at once.
    v1::AttachRequest msg;
    while (stream->Read(&msg)) {
      if (msg.has_heartbeat()) core_->Heartbeat(s->id);
    }
    std::lock_guard lock(mu_);
    live_.erase(s->id);
  }
  // A daemon that is stopping keeps the session's ledgers and record: the
  // next daemon lets the process resume it (Core::Recover).
  if (!stopping_.load()) core_->Detach(s->id);
  return grpc::Status::OK;
}

void SessionService::Cancel(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = live_.find(id);
  if (it != live_.end()) it->second.context->TryCancel();
}

void SessionService::AnnounceShutdown(const std::string& reason) {
  v1::AttachEvent event;
  event.mutable_shutting_down()->set_reason(reason);
  stopping_.store(true);
  std::lock_guard lock(mu_);
  for (auto& [id, live] : live_) live.stream->Write(event);
}

}  // namespace structd::server
