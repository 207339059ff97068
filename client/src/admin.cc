#include "structd/client/admin.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/src/connection.h"
#include "client/src/convert.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "structd/shm/default_paths.h"
#include "structd/v1/admin.grpc.pb.h"

namespace structd::client {
namespace internal {

class AdminConnection {
 public:
  explicit AdminConnection(AdminOptions options) : options_(std::move(options)) {
    grpc::ChannelArguments args;
    // See connection.cc: no connection inherited from another channel.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel_ = grpc::CreateCustomChannel("unix:" + options_.socket,
                                         grpc::InsecureChannelCredentials(), args);
    admin_ = v1::Admin::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }

  bool WaitForConnected() {
    return channel_->WaitForConnected(std::chrono::system_clock::now() +
                                      options_.connect_timeout);
  }

  template <typename Stub, typename Request, typename Response>
  absl::Status Call(Stub& stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                 Response*),
                    const Request& request, Response* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
    Authorize(context);
    return Result((stub.*method)(&context, request, response));
  }

  // Adds the admin capability (if any) to a call's metadata.
  void Authorize(grpc::ClientContext& context) const {
    if (!options_.admin_capability.empty()) {
      context.AddMetadata("structd-admin", options_.admin_capability);
    }
  }

  // A call's status, UNAVAILABLE naming the socket.
  absl::Status Result(const grpc::Status& s) const {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return absl::UnavailableError(absl::StrCat("no structd at ", options_.socket, ": ",
                                                 s.error_message()));
    }
    return FromGrpc(s);
  }

  AdminOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace internal

namespace {

DecodedInstance ViewFromProto(const v1::InstanceView& in) {
  DecodedInstance out;
  out.ref = Ref::FromBits(in.ref());
  out.token = shm::TypeToken::FromHex(in.token()).value_or(shm::TypeToken());
  out.key = in.key();
  out.refcount = in.refcount();
  out.generation = in.generation();
  out.error = in.error();
  for (const v1::FieldValue& f : in.fields()) {
    DecodedField v{f.name(), f.type(), f.value(), {}};
    if (f.has_target()) v.target.push_back(ViewFromProto(f.target()));
    out.fields.push_back(std::move(v));
  }
  return out;
}

}  // namespace

AdminClient::AdminClient(std::unique_ptr<internal::AdminConnection> connection)
    : connection_(std::move(connection)) {}
AdminClient::~AdminClient() = default;

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(AdminOptions options) {
  if (options.socket.empty()) options.socket = shm::DefaultSocketPath();
  if (options.admin_capability.empty()) {
    if (const char* cap = std::getenv("STRUCTD_ADMIN_CAPABILITY")) options.admin_capability = cap;
  }
  if (options.admin_capability.empty()) {
    std::string file = options.admin_capability_file;
    if (file.empty()) {
      file = std::filesystem::path(options.socket).parent_path() / "state" / "admin.capability";
    }
    // Unreadable (another user's daemon) is not an error: root needs none,
    // and the daemon's refusal says what to do.
    std::ifstream in(file);
    in >> options.admin_capability;
  }
  auto c = std::make_unique<internal::AdminConnection>(options);
  if (!internal::SocketExists(options.socket) || !c->WaitForConnected()) {
    return absl::UnavailableError(absl::StrCat(
        "no structd at ", options.socket, ": start it with `structd --socket ",
        options.socket, "` (or deploy/scripts/run.sh), or point --socket/STRUCTD_SOCKET at it"));
  }
  // The admin capability is a secret: only for a daemon of a trusted uid.
  if (absl::Status s = internal::VerifyDaemon(options.socket,
                                              internal::ExpectedDaemonUid(options.daemon_uid));
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<AdminClient>(new AdminClient(std::move(c)));
}

const std::string& AdminClient::socket() const { return connection_->options_.socket; }

absl::StatusOr<Health> AdminClient::CheckHealth() {
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  if (absl::Status s = connection_->Call(*connection_->health_,
                                         &grpc::health::v1::Health::Stub::Check, request,
                                         &response);
      !s.ok()) {
    return s;
  }
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return Health::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return Health::kNotServing;
    default:
      return Health::kUnknown;
  }
}

absl::StatusOr<DaemonStatus> AdminClient::Status() {
  v1::GetStatusRequest request;
  v1::GetStatusResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::GetStatus,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  DaemonStatus out{r.version(),  r.uptime_ms(), r.daemon_instance(), r.socket(),
                   r.state_dir(), r.pid(),      r.channels(),        r.sessions(),
                   r.live_instances(), r.arena_bytes(), {}, {}};
  for (const v1::UnrecoveredChannel& u : r.unrecovered()) {
    out.unrecovered.push_back({u.dir(), u.name(), u.reason()});
  }
  for (const v1::QuotaUse& q : r.quotas()) {
    out.quotas.push_back({q.quota(), q.per_uid(), q.uid(), q.used(), q.limit()});
  }
  return out;
}

absl::StatusOr<uint32_t> AdminClient::Drop(const std::string& channel) {
  v1::AdminDropChannelRequest request;
  request.set_channel(channel);
  v1::AdminDropChannelResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::DropChannel,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  return r.sessions();
}

absl::StatusOr<std::vector<ChannelSummary>> AdminClient::Channels() {
  v1::ListChannelsRequest request;
  v1::ListChannelsResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::ListChannels,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  std::vector<ChannelSummary> out;
  for (const v1::ChannelSummary& c : r.channels()) {
    out.push_back({c.channel_id(), c.name(), c.types(), c.roots(), c.sessions(),
                   c.live_instances(), c.arena_bytes(), c.sealed(), c.dropped(), c.epoch(),
                   c.damage()});
  }
  return out;
}

absl::StatusOr<std::vector<SessionSummary>> AdminClient::Sessions() {
  v1::ListSessionsRequest request;
  v1::ListSessionsResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::ListSessions,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  std::vector<SessionSummary> out;
  for (const v1::SessionSummary& x : r.sessions()) {
    out.push_back({x.session_id(), x.client_name(), x.pid(), x.uid(), x.attached_unix_ms(),
                   x.refs_held(), {x.channels().begin(), x.channels().end()}});
  }
  return out;
}

absl::StatusOr<std::vector<TypeInfo>> AdminClient::Types(const std::string& channel,
                                                          bool* sealed) {
  v1::AdminListTypesRequest request;
  request.set_channel(channel);
  v1::AdminListTypesResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::ListTypes,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  if (sealed) *sealed = r.sealed();
  std::vector<TypeInfo> out;
  for (const v1::TypeInfo& t : r.types()) {
    absl::StatusOr<TypeInfo> info = internal::TypeInfoFromProto(t);
    if (!info.ok()) return info.status();
    out.push_back(std::move(*info));
  }
  return out;
}

absl::StatusOr<InstanceListing> AdminClient::Instances(const std::string& channel,
                                                       shm::TypeToken token, uint32_t limit) {
  v1::ListInstancesRequest request;
  request.set_channel(channel);
  if (!token.is_zero()) request.set_token(token.ToHex());
  request.set_limit(limit);
  v1::ListInstancesResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_,
                                         &v1::Admin::Stub::ListInstances, request, &r);
      !s.ok()) {
    return s;
  }
  InstanceListing out;
  out.truncated = r.truncated();
  for (const v1::TypeCount& c : r.counts()) {
    out.counts.push_back({shm::TypeToken::FromHex(c.token()).value_or(shm::TypeToken()),
                          c.key(), c.count(), c.bytes()});
  }
  for (const v1::InstanceSummary& i : r.instances()) {
    out.instances.push_back({Ref::FromBits(i.ref()),
                             shm::TypeToken::FromHex(i.token()).value_or(shm::TypeToken()),
                             i.refcount()});
  }
  return out;
}

absl::StatusOr<DecodedInstance> AdminClient::Inspect(const std::string& channel, Ref ref,
                                                  uint32_t depth) {
  v1::InspectInstanceRequest request;
  request.set_channel(channel);
  request.set_ref(ref.bits());
  request.set_depth(depth);
  v1::InspectInstanceResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_,
                                         &v1::Admin::Stub::InspectInstance, request, &r);
      !s.ok()) {
    return s;
  }
  return ViewFromProto(r.instance());
}

absl::StatusOr<std::vector<RootInfo>> AdminClient::Roots(const std::string& channel) {
  v1::AdminListRootsRequest request;
  request.set_channel(channel);
  v1::AdminListRootsResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::ListRoots,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  std::vector<RootInfo> out;
  for (const v1::AdminRoot& x : r.roots()) {
    out.push_back({x.name(), Ref::FromBits(x.ref()),
                   shm::TypeToken::FromHex(x.token()).value_or(shm::TypeToken())});
  }
  return out;
}

absl::StatusOr<std::vector<PortInfo>> AdminClient::Ports(const std::string& channel) {
  v1::AdminListPortsRequest request;
  request.set_channel(channel);
  v1::AdminListPortsResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::ListPorts,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  std::vector<PortInfo> out;
  for (const v1::PortInfo& p : r.ports()) out.push_back(internal::PortInfoFromProto(p));
  return out;
}

absl::StatusOr<MemoryReport> AdminClient::Memory(const std::string& channel) {
  v1::GetMemoryRequest request;
  request.set_channel(channel);
  v1::GetMemoryResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::GetMemory,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  return MemoryReport{r.extents(),     r.extent_size(), r.arena_bytes(),
                      r.live_bytes(),  r.free_block_bytes(), r.class_slabs(),
                      r.large_slabs(), r.unassigned_slabs(), r.fragmentation()};
}

absl::StatusOr<AdminClient::Metrics> AdminClient::GetMetrics() {
  v1::GetMetricsRequest request;
  v1::GetMetricsResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::GetMetrics,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  return Metrics{r.text(), r.metrics_listen()};
}

absl::Status AdminClient::Snapshot(const std::string& channel,
                                   const std::function<absl::Status(const SnapshotChunk&)>& sink) {
  grpc::ClientContext context;
  connection_->Authorize(context);
  v1::SnapshotChannelRequest request;
  request.set_channel(channel);
  std::unique_ptr<grpc::ClientReader<v1::SnapshotChunk>> reader =
      connection_->admin_->SnapshotChannel(&context, request);
  v1::SnapshotChunk in;
  SnapshotChunk chunk;
  while (reader->Read(&in)) {
    chunk.file = in.file();
    chunk.file_size = in.file_size();
    chunk.offset = in.offset();
    chunk.data = std::move(*in.mutable_data());
    if (absl::Status s = sink(chunk); !s.ok()) {
      context.TryCancel();
      reader->Finish().ok();  // drains; the cancellation is ours
      return s;
    }
  }
  return connection_->Result(reader->Finish());
}

absl::StatusOr<AdminClient::RestoreReport> AdminClient::Restore(
    const std::string& manifest, const std::string& name,
    const std::function<absl::StatusOr<bool>(SnapshotChunk&)>& source) {
  grpc::ClientContext context;
  connection_->Authorize(context);
  v1::RestoreChannelResponse r;
  std::unique_ptr<grpc::ClientWriter<v1::RestoreChannelRequest>> writer =
      connection_->admin_->RestoreChannel(&context, &r);
  v1::RestoreChannelRequest first;
  first.set_manifest(manifest);
  first.set_name(name);
  bool open = writer->Write(first);
  SnapshotChunk chunk;
  while (open) {
    absl::StatusOr<bool> more = source(chunk);
    if (!more.ok()) {
      context.TryCancel();
      writer->Finish().ok();
      return more.status();
    }
    if (!*more) break;
    v1::RestoreChannelRequest next;
    v1::SnapshotChunk* c = next.mutable_chunk();
    c->set_file(chunk.file);
    c->set_offset(chunk.offset);
    c->set_data(std::move(chunk.data));
    open = writer->Write(next);  // false: the daemon refused; Finish says why
  }
  writer->WritesDone();
  if (absl::Status s = connection_->Result(writer->Finish()); !s.ok()) return s;
  return RestoreReport{r.channel_id(),       r.name(),
                       r.types(),            r.roots(),
                       r.live_instances(),   r.refcounts_fixed(),
                       r.dangling_dropped(), r.unreferenced_freed(),
                       r.mutexes_owner_died()};
}

absl::StatusOr<AdminClient::FieldSet> AdminClient::SetField(const std::string& channel, Ref ref,
                                                            const std::string& field,
                                                            const std::string& value) {
  v1::SetFieldRequest request;
  request.set_channel(channel);
  request.set_ref(ref.bits());
  request.set_field(field);
  request.set_value(value);
  v1::SetFieldResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::SetField,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  return FieldSet{r.key(), r.type(), r.previous(), r.value()};
}

absl::StatusOr<Ref> AdminClient::SetRoot(const std::string& channel, const std::string& name,
                                         Ref ref) {
  v1::AdminSetRootRequest request;
  request.set_channel(channel);
  request.set_name(name);
  request.set_ref(ref.bits());
  v1::AdminSetRootResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::SetRoot,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  return Ref::FromBits(r.previous());
}

absl::Status AdminClient::DeleteRoot(const std::string& channel, const std::string& name) {
  v1::AdminDeleteRootRequest request;
  request.set_channel(channel);
  request.set_name(name);
  v1::AdminDeleteRootResponse r;
  return connection_->Call(*connection_->admin_, &v1::Admin::Stub::DeleteRoot, request, &r);
}

absl::StatusOr<ArenaCheck> AdminClient::Check(const std::string& channel) {
  v1::CheckArenaRequest request;
  request.set_channel(channel);
  v1::CheckArenaResponse r;
  if (absl::Status s = connection_->Call(*connection_->admin_, &v1::Admin::Stub::CheckArena,
                                         request, &r);
      !s.ok()) {
    return s;
  }
  ArenaCheck out;
  out.ok = r.ok();
  out.instances_checked = r.instances_checked();
  for (const v1::Problem& p : r.problems()) {
    out.problems.push_back({Ref::FromBits(p.ref()), p.what()});
  }
  return out;
}

}  // namespace structd::client
