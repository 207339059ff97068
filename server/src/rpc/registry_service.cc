#include "server/src/rpc/services.h"

#include "absl/strings/str_cat.h"

namespace structd::server {
namespace {

void ToProto(const ArenaSummary& a, v1::ArenaInfo* out) {
  out->set_path(a.path);
  out->set_extent_size(a.extent_size);
  out->set_max_extents(a.max_extents);
  out->set_extent_count(a.extent_count);
  out->set_format_version(a.format_version);
  out->set_epoch(a.epoch);
}

}  // namespace

void ToProto(const RegisteredType& t, v1::TypeInfo* out) {
  out->set_key(t.key);
  out->set_token(t.token.ToHex());
  out->set_type_index(t.type_index);
  v1::Layout* l = out->mutable_layout();
  for (const shm::Field& f : t.layout.fields()) {
    v1::Field* pf = l->add_fields();
    pf->set_name(f.name());
    pf->set_type(shm::FieldTypeName(f.spec));
    pf->set_offset(f.offset);
    pf->set_size(f.size);
    pf->set_align(f.align);
  }
  l->set_size(t.layout.size());
  l->set_align(t.layout.align());
  l->set_fingerprint(shm::FingerprintHex(t.layout.fingerprint()));
  l->set_canonical(t.layout.canonical());
}

grpc::Status RegistryService::CreateChannel(
    grpc::ServerContext* context, const v1::CreateChannelRequest* request,
    v1::CreateChannelResponse* response) {
  absl::StatusOr<std::string> session = CallerSession(*context, *core_, *peers_);
  if (!session.ok()) return ToGrpc(session.status());
  absl::StatusOr<ChannelCreated> c = core_->CreateChannel(
      *session, request->name(), request->arena().extent_size(),
      request->arena().max_extents());
  if (!c.ok()) return ToGrpc(c.status());
  response->set_channel_id(c->id);
  response->set_owner_capability(c->owner_capability);
  response->set_member_capability(c->member_capability);
  ToProto(c->arena, response->mutable_arena());
  return grpc::Status::OK;
}

grpc::Status RegistryService::JoinChannel(grpc::ServerContext* context,
                                          const v1::JoinChannelRequest* request,
                                          v1::JoinChannelResponse* response) {
  absl::StatusOr<std::string> session = CallerSession(*context, *core_, *peers_);
  if (!session.ok()) return ToGrpc(session.status());
  absl::StatusOr<ChannelJoined> j =
      core_->JoinChannel(*session, request->channel(), request->capability());
  if (!j.ok()) return ToGrpc(j.status());
  response->set_channel_id(j->id);
  response->set_name(j->name);
  response->set_role(j->role == Role::kOwner ? v1::ROLE_OWNER : v1::ROLE_MEMBER);
  ToProto(j->arena, response->mutable_arena());
  return grpc::Status::OK;
}

grpc::Status RegistryService::DropChannel(grpc::ServerContext* context,
                                          const v1::DropChannelRequest* request,
                                          v1::DropChannelResponse*) {
  absl::StatusOr<std::string> session = CallerSession(*context, *core_, *peers_);
  if (!session.ok()) return ToGrpc(session.status());
  return ToGrpc(
      core_->DropChannel(request->channel(), request->owner_capability()));
}

grpc::Status RegistryService::RegisterType(
    grpc::ServerContext* context, const v1::RegisterTypeRequest* request,
    v1::RegisterTypeResponse* response) {
  absl::StatusOr<CallerChannel> call =
      JoinedChannel(*context, *core_, *peers_, request->channel());
  if (!call.ok()) return ToGrpc(call.status());
  if (static_cast<uint32_t>(request->fields_size()) >
      core_->options().limits.layout.max_fields) {
    return ToGrpc(absl::InvalidArgumentError(absl::StrCat(
        "type '", request->key(), "': ", request->fields_size(),
        " fields, more than the limit of ", core_->options().limits.layout.max_fields,
        " (split the struct)")));
  }
  std::vector<shm::FieldSpec> fields;
  for (int i = 0; i < request->fields_size(); ++i) {
    shm::FieldSpec spec;
    spec.name = request->fields(i).name();
    if (absl::Status s = shm::ParseFieldType(request->fields(i).type(), spec);
        !s.ok()) {
      return ToGrpc(absl::InvalidArgumentError(absl::StrCat(
          "type '", request->key(), "' field #", i, " '", spec.name, "': ",
          s.message())));
    }
    fields.push_back(std::move(spec));
  }
  absl::StatusOr<TypeRegistry::RegisterResult> r =
      call->channel->RegisterType(request->key(), std::move(fields));
  if (!r.ok()) return ToGrpc(r.status());
  ToProto(*r->type, response->mutable_type());
  response->set_created(r->created);
  return grpc::Status::OK;
}

grpc::Status RegistryService::DescribeType(
    grpc::ServerContext* context, const v1::DescribeTypeRequest* request,
    v1::DescribeTypeResponse* response) {
  absl::StatusOr<CallerChannel> call =
      JoinedChannel(*context, *core_, *peers_, request->channel());
  if (!call.ok()) return ToGrpc(call.status());
  absl::StatusOr<shm::TypeToken> token = ParseToken(request->token());
  if (!token.ok()) return ToGrpc(token.status());
  absl::StatusOr<RegisteredType> t = call->channel->DescribeType(*token);
  if (!t.ok()) return ToGrpc(t.status());
  ToProto(*t, response->mutable_type());
  return grpc::Status::OK;
}

grpc::Status RegistryService::ListTypes(grpc::ServerContext* context,
                                        const v1::ListTypesRequest* request,
                                        v1::ListTypesResponse* response) {
  absl::StatusOr<CallerChannel> call =
      JoinedChannel(*context, *core_, *peers_, request->channel());
  if (!call.ok()) return ToGrpc(call.status());
  bool sealed = false;
  for (const RegisteredType& t : call->channel->ListTypes(&sealed)) {
    ToProto(t, response->add_types());
  }
  response->set_sealed(sealed);
  return grpc::Status::OK;
}

grpc::Status RegistryService::SealRegistry(
    grpc::ServerContext* context, const v1::SealRegistryRequest* request,
    v1::SealRegistryResponse*) {
  absl::StatusOr<std::string> session = CallerSession(*context, *core_, *peers_);
  if (!session.ok()) return ToGrpc(session.status());
  absl::StatusOr<std::shared_ptr<Channel>> ch =
      core_->OwnedChannel(request->channel(), request->owner_capability());
  if (!ch.ok()) return ToGrpc(ch.status());
  return ToGrpc((*ch)->Seal());
}

}  // namespace structd::server
