// Instances.CreatePort, SendToPort, ReceiveFromPort, ListPorts and
// OpenSessionRecord: the gRPC face of ports and of the records clients move
// messages through (core/channel_ports.cc, core/channel_records.cc decide).
#include "absl/strings/str_format.h"
#include "rpc/services.h"

namespace structd::server {

void PortInfoToProto(const Channel::PortInfo& p, v1::PortInfo* out) {
  out->set_name(p.name);
  out->set_ref(p.ref.bits());
  out->set_capacity(p.capacity);
  out->set_sent(p.sent);
  out->set_received(p.received);
  out->set_depth(p.sent > p.received ? p.sent - p.received : 0);
  out->set_receivers_waiting(p.receivers_waiting);
  out->set_senders_waiting(p.senders_waiting);
}

grpc::Status InstancesService::CreatePort(grpc::ServerContext* context,
                                          const v1::CreatePortRequest* request,
                                          v1::CreatePortResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<Channel::PortInfo> port =
        c.channel->CreatePort(request->name(), request->capacity());
    if (port.ok()) PortInfoToProto(*port, response->mutable_port());
    return port.status();
  });
}

grpc::Status InstancesService::SendToPort(grpc::ServerContext* context,
                                          const v1::SendToPortRequest* request,
                                          v1::SendToPortResponse* response) {
  const uint32_t max = core_->options().max_refs_per_call;
  if (request->refs().empty() || static_cast<uint32_t>(request->refs_size()) > max) {
    return ToGrpc(absl::InvalidArgumentError(absl::StrFormat(
        "refs: %d given, allowed 1 to %d (split large calls)", request->refs_size(), max)));
  }
  std::vector<shm::Ref> refs;
  refs.reserve(request->refs_size());
  for (uint64_t bits : request->refs()) refs.push_back(shm::Ref::FromBits(bits));
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<uint32_t> sent = c.channel->SendToPort(c.session, request->name(), refs);
    if (sent.ok()) response->set_sent(*sent);
    return sent.status();
  });
}

grpc::Status InstancesService::ReceiveFromPort(grpc::ServerContext* context,
                                               const v1::ReceiveFromPortRequest* request,
                                               v1::ReceiveFromPortResponse* response) {
  const uint32_t max = core_->options().max_refs_per_call;
  if (request->max() == 0 || request->max() > max) {
    return ToGrpc(absl::InvalidArgumentError(absl::StrFormat(
        "max: %d, allowed 1 to %d (split large calls)", request->max(), max)));
  }
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<std::vector<shm::Ref>> refs =
        c.channel->ReceiveFromPort(c.session, request->name(), request->max());
    if (!refs.ok()) return refs.status();
    for (shm::Ref r : *refs) response->add_refs(r.bits());
    return absl::OkStatus();
  });
}

grpc::Status InstancesService::ListPorts(grpc::ServerContext* context,
                                         const v1::ListPortsRequest* request,
                                         v1::ListPortsResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) {
    for (const Channel::PortInfo& p : c.channel->ListPorts()) PortInfoToProto(p, response->add_ports());
    return absl::OkStatus();
  });
}

grpc::Status InstancesService::OpenSessionRecord(grpc::ServerContext* context,
                                                 const v1::OpenSessionRecordRequest* request,
                                                 v1::OpenSessionRecordResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<Channel::RecordInfo> record = c.channel->OpenRecord(c.session);
    if (!record.ok()) return record.status();
    response->set_record(record->ref.bits());
    response->set_tag(record->tag);
    response->set_lanes(shm::kRecordLanes);
    response->set_slots(shm::kRecordSlots);
    return absl::OkStatus();
  });
}

}  // namespace structd::server
