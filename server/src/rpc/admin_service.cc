#include <unistd.h>

#include "absl/strings/str_format.h"
#include "metrics.h"
#include "rpc/services.h"

namespace structd::server {

absl::Status AdminService::CheckAdmin(grpc::ServerContext& context) const {
  const auto& md = context.client_metadata();
  auto it = md.find("structd-admin");
  std::string_view presented =
      it == md.end() ? std::string_view() : std::string_view(it->second.data(), it->second.size());
  return core_->AuthorizeAdmin(peers_->Lookup(context.peer()), presented);
}

grpc::Status AdminService::GetStatus(grpc::ServerContext* context,
                                     const v1::GetStatusRequest*,
                                     v1::GetStatusResponse* response) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  response->set_version(info_.version);
  response->set_uptime_ms(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - info_.started)
          .count()));
  response->set_daemon_instance(core_->instance_id());
  response->set_socket(info_.socket);
  response->set_state_dir(info_.state_dir);
  response->set_pid(static_cast<uint32_t>(getpid()));
  Core::Totals totals = core_->GetTotals();
  response->set_channels(totals.channels);
  response->set_sessions(totals.sessions);
  response->set_live_instances(totals.live_instances);
  response->set_arena_bytes(totals.arena_bytes);
  for (const UnrecoveredChannel& u : core_->Unrecovered()) {
    v1::UnrecoveredChannel* out = response->add_unrecovered();
    out->set_dir(u.dir);
    out->set_name(u.name);
    out->set_reason(u.reason);
  }
  for (const QuotaUse& q : core_->Quotas()) {
    v1::QuotaUse* out = response->add_quotas();
    out->set_quota(q.quota);
    out->set_per_uid(q.per_uid);
    out->set_uid(q.uid);
    out->set_used(q.used);
    out->set_limit(q.limit);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::DropChannel(grpc::ServerContext* context,
                                       const v1::AdminDropChannelRequest* request,
                                       v1::AdminDropChannelResponse* response) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  absl::StatusOr<uint32_t> sessions = core_->DropChannelAsAdmin(request->channel());
  if (!sessions.ok()) return ToGrpc(sessions.status());
  response->set_sessions(*sessions);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListChannels(grpc::ServerContext* context,
                                        const v1::ListChannelsRequest*,
                                        v1::ListChannelsResponse* response) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  for (const auto& c : core_->Channels()) {
    ChannelStats st = c->Stats();
    v1::ChannelSummary* out = response->add_channels();
    out->set_channel_id(c->id());
    out->set_name(c->name());
    out->set_types(st.types);
    out->set_roots(st.roots);
    out->set_sessions(st.sessions);
    out->set_live_instances(st.alloc.live_instances);
    out->set_session_records(st.session_records);
    out->set_arena_bytes(st.alloc.extent_bytes);
    out->set_sealed(st.sealed);
    out->set_dropped(st.dropped);
    out->set_epoch(c->arena_summary().epoch);
    if (absl::Status usable = c->Usable(); absl::IsDataLoss(usable)) {
      out->set_damage(std::string(usable.message()));
    }
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ListSessions(grpc::ServerContext* context,
                                        const v1::ListSessionsRequest*,
                                        v1::ListSessionsResponse* response) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  for (const SessionInfo& s : core_->Sessions()) {
    v1::SessionSummary* out = response->add_sessions();
    out->set_session_id(s.id);
    out->set_client_name(s.client_name);
    out->set_pid(static_cast<uint32_t>(s.pid));
    out->set_uid(static_cast<uint32_t>(s.uid));
    out->set_attached_unix_ms(s.attached_unix_ms);
    out->set_refs_held(s.refs_held);
    for (const std::string& c : s.channels) out->add_channels(c);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ListTypes(grpc::ServerContext* context,
                                     const v1::AdminListTypesRequest* request,
                                     v1::AdminListTypesResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    bool sealed = false;
    for (const RegisteredType& t : ch.ListTypes(&sealed)) {
      ToProto(t, response->add_types());
    }
    response->set_sealed(sealed);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::ListRoots(grpc::ServerContext* context,
                                     const v1::AdminListRootsRequest* request,
                                     v1::AdminListRootsResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    for (const RootEntry& r : ch.ListRoots()) {
      v1::AdminRoot* out = response->add_roots();
      out->set_name(r.name);
      out->set_ref(r.ref.bits());
      if (!r.token.is_zero()) out->set_token(r.token.ToHex());
    }
    return absl::OkStatus();
  });
}

grpc::Status AdminService::ListPorts(grpc::ServerContext* context,
                                     const v1::AdminListPortsRequest* request,
                                     v1::AdminListPortsResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    for (const Channel::PortInfo& p : ch.ListPorts()) PortInfoToProto(p, response->add_ports());
    return absl::OkStatus();
  });
}

grpc::Status AdminService::GetMemory(grpc::ServerContext* context,
                                     const v1::GetMemoryRequest* request,
                                     v1::GetMemoryResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    ChannelStats st = ch.Stats();
    ArenaSummary a = ch.arena_summary();
    response->set_extents(static_cast<uint32_t>(st.alloc.extents));
    response->set_extent_size(a.extent_size);
    response->set_arena_bytes(st.alloc.extent_bytes);
    response->set_live_bytes(st.alloc.live_block_bytes);
    response->set_free_block_bytes(st.alloc.free_block_bytes);
    response->set_class_slabs(st.alloc.class_slabs);
    response->set_large_slabs(st.alloc.large_slabs);
    response->set_unassigned_slabs(st.alloc.unassigned_slabs);
    response->set_fragmentation(st.fragmentation());
    return absl::OkStatus();
  });
}

grpc::Status AdminService::GetMetrics(grpc::ServerContext* context,
                                      const v1::GetMetricsRequest*,
                                      v1::GetMetricsResponse* response) {
  if (absl::Status s = CheckAdmin(*context); !s.ok()) return ToGrpc(s);
  if (info_.metrics == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this daemon keeps no metrics");
  }
  response->set_text(info_.metrics->Exposition());
  response->set_metrics_listen(info_.metrics->ServingAddress());
  return grpc::Status::OK;
}

namespace {

void ToProto(const DecodedInstance& v, v1::InstanceView* out) {
  out->set_ref(v.ref.bits());
  if (!v.token.is_zero()) out->set_token(v.token.ToHex());
  out->set_key(v.key);
  out->set_refcount(v.refcount);
  out->set_generation(v.generation);
  out->set_error(v.error);
  for (const DecodedField& f : v.fields) {
    v1::FieldValue* pf = out->add_fields();
    pf->set_name(f.name);
    pf->set_type(f.type);
    pf->set_value(f.value);
    if (!f.target.empty()) ToProto(f.target.front(), pf->mutable_target());
  }
}

}  // namespace

grpc::Status AdminService::ListInstances(
    grpc::ServerContext* context, const v1::ListInstancesRequest* request,
    v1::ListInstancesResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    if (request->limit() > core_->options().max_refs_per_call) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "limit: %d, at most %d (use counts, or filter by type)", request->limit(),
          core_->options().max_refs_per_call));
    }
    shm::TypeToken filter;
    if (!request->token().empty()) {
      absl::StatusOr<shm::TypeToken> t = ParseToken(request->token());
      if (!t.ok()) return t.status();
      filter = *t;
    }
    InstanceListing l = ch.ListInstances(filter, request->limit());
    for (const shm::TypeCount& c : l.counts) {
      v1::TypeCount* out = response->add_counts();
      if (!c.token.is_zero()) out->set_token(c.token.ToHex());
      out->set_key(c.key);
      out->set_count(c.count);
      out->set_bytes(c.bytes);
    }
    for (const shm::InstanceSummary& i : l.instances) {
      v1::InstanceSummary* out = response->add_instances();
      out->set_ref(i.ref.bits());
      if (!i.token.is_zero()) out->set_token(i.token.ToHex());
      out->set_refcount(i.refcount);
    }
    response->set_truncated(l.truncated);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::InspectInstance(
    grpc::ServerContext* context, const v1::InspectInstanceRequest* request,
    v1::InspectInstanceResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    absl::StatusOr<DecodedInstance> v =
        ch.Inspect(shm::Ref::FromBits(request->ref()), request->depth());
    if (!v.ok()) return v.status();
    ToProto(*v, response->mutable_instance());
    return absl::OkStatus();
  });
}

grpc::Status AdminService::CheckArena(grpc::ServerContext* context,
                                      const v1::CheckArenaRequest* request,
                                      v1::CheckArenaResponse* response) {
  return OnAdminChannel(*context, request->channel(), [&](Channel& ch) -> absl::Status {
    CheckReport r = ch.Check();
    response->set_ok(r.problems.empty());
    response->set_instances_checked(r.instances_checked);
    for (const ArenaProblem& p : r.problems) {
      v1::Problem* out = response->add_problems();
      out->set_ref(p.ref.bits());
      out->set_what(p.what);
    }
    return absl::OkStatus();
  });
}

}  // namespace structd::server
