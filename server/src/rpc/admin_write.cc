// Admin: writes by hand (structctl set, root set, root delete). Each is
// logged with who made it.

#include "absl/strings/str_format.h"
#include "rpc/services.h"
#include "spdlog/spdlog.h"

namespace structd::server {

std::string AdminService::Caller(grpc::ServerContext& context) const {
  PeerCredentials peer = peers_->Lookup(context.peer());
  if (!peer.known) return "an unknown peer";
  return absl::StrFormat("uid %d pid %d", peer.uid, peer.pid);
}

grpc::Status AdminService::SetField(grpc::ServerContext* context,
                                    const v1::SetFieldRequest* request,
                                    v1::SetFieldResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    const shm::Ref ref = shm::Ref::FromBits(request->ref());
    absl::StatusOr<Channel::FieldWrite> w =
        ch.SetFieldAsAdmin(ref, request->field(), request->value());
    if (!w.ok()) return w.status();
    spdlog::warn("admin write by {}: channel '{}' {} {}.{} set from {} to {}", Caller(*context),
                 ch.name(), ref.ToString(), w->key, w->field, w->previous, w->value);
    response->set_key(w->key);
    response->set_type(w->type);
    response->set_previous(w->previous);
    response->set_value(w->value);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::SetRoot(grpc::ServerContext* context,
                                   const v1::AdminSetRootRequest* request,
                                   v1::AdminSetRootResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    const shm::Ref ref = shm::Ref::FromBits(request->ref());
    absl::StatusOr<shm::Ref> previous = ch.SetRoot(request->name(), ref);
    if (!previous.ok()) return previous.status();
    spdlog::warn("admin write by {}: channel '{}' root '{}' set to {} (was {})",
                 Caller(*context), ch.name(), request->name(), ref.ToString(),
                 previous->ToString());
    response->set_previous(previous->bits());
    return absl::OkStatus();
  });
}

grpc::Status AdminService::DeleteRoot(grpc::ServerContext* context,
                                      const v1::AdminDeleteRootRequest* request,
                                      v1::AdminDeleteRootResponse*) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    if (absl::Status s = ch.DeleteRoot(request->name()); !s.ok()) return s;
    spdlog::warn("admin write by {}: channel '{}' root '{}' deleted", Caller(*context),
                 ch.name(), request->name());
    return absl::OkStatus();
  });
}

}  // namespace structd::server
