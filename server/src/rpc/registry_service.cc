#include "rpc/services.h"

#include "absl/strings/str_cat.h"

namespace structd::server {
namespace {

void ToProto(const ArenaSummary& a, v1::ArenaInfo* out) {
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
  return OnSession(*context, *core_, *peers_, [&](const std::string& session) -> absl::Status {
    absl::StatusOr<ChannelCreated> c = core_->CreateChannel(
        session, request->name(), request->arena().extent_size(), request->arena().max_extents());
    if (!c.ok()) return c.status();
    response->set_channel_id(c->id);
    response->set_owner_capability(c->owner_capability);
    response->set_member_capability(c->member_capability);
    ToProto(c->arena, response->mutable_arena());
    return absl::OkStatus();
  });
}

grpc::Status RegistryService::JoinChannel(grpc::ServerContext* context,
                                          const v1::JoinChannelRequest* request,
                                          v1::JoinChannelResponse* response) {
  return OnSession(*context, *core_, *peers_, [&](const std::string& session) -> absl::Status {
    absl::StatusOr<ChannelJoined> j =
        core_->JoinChannel(session, request->channel(), request->capability());
    if (!j.ok()) return j.status();
    response->set_channel_id(j->id);
    response->set_name(j->name);
    response->set_role(j->role == Role::kOwner ? v1::ROLE_OWNER : v1::ROLE_MEMBER);
    ToProto(j->arena, response->mutable_arena());
    return absl::OkStatus();
  });
}

grpc::Status RegistryService::DropChannel(grpc::ServerContext* context,
                                          const v1::DropChannelRequest* request,
                                          v1::DropChannelResponse*) {
  return OnSession(*context, *core_, *peers_, [&](const std::string&) {
    return core_->DropChannel(request->channel(), request->owner_capability());
  });
}

grpc::Status RegistryService::RegisterType(
    grpc::ServerContext* context, const v1::RegisterTypeRequest* request,
    v1::RegisterTypeResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    // The field count and every other layout rule are the registry's
    // (Layout::Compute): this only parses the text of each type.
    std::vector<shm::FieldSpec> fields;
    for (int i = 0; i < request->fields_size(); ++i) {
      shm::FieldSpec spec;
      spec.name = request->fields(i).name();
      if (absl::Status s = shm::ParseFieldType(request->fields(i).type(), spec); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "type '", request->key(), "' field #", i, " '", spec.name, "': ", s.message()));
      }
      fields.push_back(std::move(spec));
    }
    absl::StatusOr<TypeRegistry::RegisterResult> r =
        c.channel->RegisterType(request->key(), std::move(fields));
    if (!r.ok()) return r.status();
    ToProto(*r->type, response->mutable_type());
    response->set_created(r->created);
    return absl::OkStatus();
  });
}

grpc::Status RegistryService::DescribeType(
    grpc::ServerContext* context, const v1::DescribeTypeRequest* request,
    v1::DescribeTypeResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<shm::TypeToken> token = ParseToken(request->token());
    if (!token.ok()) return token.status();
    absl::StatusOr<RegisteredType> t = c.channel->DescribeType(*token);
    if (t.ok()) ToProto(*t, response->mutable_type());
    return t.status();
  });
}

grpc::Status RegistryService::ListTypes(grpc::ServerContext* context,
                                        const v1::ListTypesRequest* request,
                                        v1::ListTypesResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) {
    bool sealed = false;
    for (const RegisteredType& t : c.channel->ListTypes(&sealed)) ToProto(t, response->add_types());
    response->set_sealed(sealed);
    return absl::OkStatus();
  });
}

grpc::Status RegistryService::SealRegistry(
    grpc::ServerContext* context, const v1::SealRegistryRequest* request,
    v1::SealRegistryResponse*) {
  return OnSession(*context, *core_, *peers_, [&](const std::string&) -> absl::Status {
    absl::StatusOr<std::shared_ptr<Channel>> ch =
        core_->OwnedChannel(request->channel(), request->owner_capability());
    if (!ch.ok()) return ch.status();
    return (*ch)->Seal();
  });
}

}  // namespace structd::server
