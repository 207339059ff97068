#ifndef STRUCTD_SERVER_RPC_SERVICES_H_
#define STRUCTD_SERVER_RPC_SERVICES_H_

// gRPC services of structd.v1. They only translate: proto in, a call into
// the domain core, proto and status out. Rules live in server/src/core.

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>
#include <map>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "structd/base/mutex.h"
#include <string>

#include "core/core.h"
#include "metrics.h"
#include "rpc/rpc_util.h"
#include "structd/v1/admin.grpc.pb.h"
#include "structd/v1/instances.grpc.pb.h"
#include "structd/v1/registry.grpc.pb.h"
#include "structd/v1/session.grpc.pb.h"

namespace structd::server {

// The Attach stream of every client, served with gRPC's callback API: an
// attached client costs a reactor object, not a thread (a sync stream
// would pin a server thread per client for the session's whole life).
// Ending a session (releasing what it held) runs on the service's own
// worker thread, never on a gRPC callback thread.
//
// Thread safety: all public methods may be called from any thread.
class SessionService final : public v1::Session::CallbackService {
 public:
  // `memory_socket`: told to every client in Attached (memory.proto).
  SessionService(Core* core, const PeerTable* peers, std::string memory_socket = "");
  ~SessionService() override;
  grpc::ServerBidiReactor<v1::AttachRequest, v1::AttachEvent>* Attach(
      grpc::CallbackServerContext* context) override;

  // Ends the Attach stream of session `id` (its lease ran out and its
  // process is gone): the client sees the stream finish with CANCELLED.
  void Cancel(const std::string& id);
  // Tells every attached client the daemon is going away. From then on a
  // closing stream keeps its session for resumption by the next daemon.
  void AnnounceShutdown(const std::string& reason);
  // Streams currently attached.
  size_t attached_count();

 private:
  class Reactor;
  // Queues `id` for Core::Detach on the worker thread.
  void DetachLater(const std::string& id);
  void DetachWorker();

  Core* const core_;         // not owned; outlives the service
  const PeerTable* peers_;   // not owned; outlives the service
  const std::string memory_socket_;
  std::atomic<bool> stopping_{false};
  base::Mutex mu_;
  // Attached streams by session id; a reactor removes itself (under mu_)
  // before it is deleted, so holders of mu_ may call into it.
  std::map<std::string, Reactor*> live_ ABSL_GUARDED_BY(mu_);
  base::CondVar detach_cv_;
  std::vector<std::string> to_detach_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::thread detach_thread_;
};

class RegistryService final : public v1::Registry::Service {
 public:
  RegistryService(Core* core, const PeerTable* peers) : core_(core), peers_(peers) {}
  grpc::Status CreateChannel(grpc::ServerContext* context,
                             const v1::CreateChannelRequest* request,
                             v1::CreateChannelResponse* response) override;
  grpc::Status JoinChannel(grpc::ServerContext* context,
                           const v1::JoinChannelRequest* request,
                           v1::JoinChannelResponse* response) override;
  grpc::Status DropChannel(grpc::ServerContext* context,
                           const v1::DropChannelRequest* request,
                           v1::DropChannelResponse* response) override;
  grpc::Status RegisterType(grpc::ServerContext* context,
                            const v1::RegisterTypeRequest* request,
                            v1::RegisterTypeResponse* response) override;
  grpc::Status DescribeType(grpc::ServerContext* context,
                            const v1::DescribeTypeRequest* request,
                            v1::DescribeTypeResponse* response) override;
  grpc::Status ListTypes(grpc::ServerContext* context,
                         const v1::ListTypesRequest* request,
                         v1::ListTypesResponse* response) override;
  grpc::Status SealRegistry(grpc::ServerContext* context,
                            const v1::SealRegistryRequest* request,
                            v1::SealRegistryResponse* response) override;

 private:
  Core* core_;
  const PeerTable* peers_;
};

// A port's counters for a reply (Instances.ListPorts, Admin.ListPorts).
void PortInfoToProto(const Channel::PortInfo& p, v1::PortInfo* out);

class InstancesService final : public v1::Instances::Service {
 public:
  InstancesService(Core* core, const PeerTable* peers) : core_(core), peers_(peers) {}
  grpc::Status Allocate(grpc::ServerContext* context,
                        const v1::AllocateRequest* request,
                        v1::AllocateResponse* response) override;
  grpc::Status AllocateBatch(grpc::ServerContext* context,
                             const v1::AllocateBatchRequest* request,
                             v1::AllocateBatchResponse* response) override;
  grpc::Status Retain(grpc::ServerContext* context,
                      const v1::RetainRequest* request,
                      v1::RetainResponse* response) override;
  grpc::Status Release(grpc::ServerContext* context,
                       const v1::ReleaseRequest* request,
                       v1::ReleaseResponse* response) override;
  grpc::Status StoreRefs(grpc::ServerContext* context,
                         const v1::StoreRefsRequest* request,
                         v1::StoreRefsResponse* response) override;
  grpc::Status SetRoot(grpc::ServerContext* context,
                       const v1::SetRootRequest* request,
                       v1::SetRootResponse* response) override;
  grpc::Status GetRoot(grpc::ServerContext* context,
                       const v1::GetRootRequest* request,
                       v1::GetRootResponse* response) override;
  grpc::Status DeleteRoot(grpc::ServerContext* context,
                          const v1::DeleteRootRequest* request,
                          v1::DeleteRootResponse* response) override;
  grpc::Status ListRoots(grpc::ServerContext* context,
                         const v1::ListRootsRequest* request,
                         v1::ListRootsResponse* response) override;
  // Ports: rpc/ports_service.cc.
  grpc::Status CreatePort(grpc::ServerContext* context,
                          const v1::CreatePortRequest* request,
                          v1::CreatePortResponse* response) override;
  grpc::Status SendToPort(grpc::ServerContext* context,
                          const v1::SendToPortRequest* request,
                          v1::SendToPortResponse* response) override;
  grpc::Status ReceiveFromPort(grpc::ServerContext* context,
                               const v1::ReceiveFromPortRequest* request,
                               v1::ReceiveFromPortResponse* response) override;
  grpc::Status ListPorts(grpc::ServerContext* context,
                         const v1::ListPortsRequest* request,
                         v1::ListPortsResponse* response) override;
  grpc::Status OpenSessionRecord(grpc::ServerContext* context,
                                 const v1::OpenSessionRecordRequest* request,
                                 v1::OpenSessionRecordResponse* response) override;

 private:
  Core* core_;
  const PeerTable* peers_;
};

class AdminService final : public v1::Admin::Service {
 public:
  struct Info {
    std::string version;
    std::string socket;
    std::string state_dir;
    std::chrono::steady_clock::time_point started;
    const DaemonMetrics* metrics = nullptr;  // null: GetMetrics is UNIMPLEMENTED
  };
  AdminService(Core* core, const PeerTable* peers, Info info)
      : core_(core), peers_(peers), info_(std::move(info)) {}
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const v1::GetStatusRequest* request,
                         v1::GetStatusResponse* response) override;
  grpc::Status ListChannels(grpc::ServerContext* context,
                            const v1::ListChannelsRequest* request,
                            v1::ListChannelsResponse* response) override;
  grpc::Status ListSessions(grpc::ServerContext* context,
                            const v1::ListSessionsRequest* request,
                            v1::ListSessionsResponse* response) override;
  grpc::Status ListTypes(grpc::ServerContext* context,
                         const v1::AdminListTypesRequest* request,
                         v1::AdminListTypesResponse* response) override;
  grpc::Status ListRoots(grpc::ServerContext* context,
                         const v1::AdminListRootsRequest* request,
                         v1::AdminListRootsResponse* response) override;
  grpc::Status ListPorts(grpc::ServerContext* context,
                         const v1::AdminListPortsRequest* request,
                         v1::AdminListPortsResponse* response) override;
  grpc::Status GetMemory(grpc::ServerContext* context,
                         const v1::GetMemoryRequest* request,
                         v1::GetMemoryResponse* response) override;
  grpc::Status GetMetrics(grpc::ServerContext* context, const v1::GetMetricsRequest* request,
                          v1::GetMetricsResponse* response) override;
  grpc::Status ListInstances(grpc::ServerContext* context,
                             const v1::ListInstancesRequest* request,
                             v1::ListInstancesResponse* response) override;
  grpc::Status InspectInstance(grpc::ServerContext* context,
                               const v1::InspectInstanceRequest* request,
                               v1::InspectInstanceResponse* response) override;
  grpc::Status DropChannel(grpc::ServerContext* context,
                           const v1::AdminDropChannelRequest* request,
                           v1::AdminDropChannelResponse* response) override;
  grpc::Status CheckArena(grpc::ServerContext* context,
                          const v1::CheckArenaRequest* request,
                          v1::CheckArenaResponse* response) override;
  // admin_snapshot.cc
  grpc::Status SnapshotChannel(grpc::ServerContext* context,
                               const v1::SnapshotChannelRequest* request,
                               grpc::ServerWriter<v1::SnapshotChunk>* writer) override;
  grpc::Status RestoreChannel(grpc::ServerContext* context,
                              grpc::ServerReader<v1::RestoreChannelRequest>* reader,
                              v1::RestoreChannelResponse* response) override;
  // admin_write.cc
  grpc::Status SetField(grpc::ServerContext* context, const v1::SetFieldRequest* request,
                        v1::SetFieldResponse* response) override;
  grpc::Status SetRoot(grpc::ServerContext* context, const v1::AdminSetRootRequest* request,
                       v1::AdminSetRootResponse* response) override;
  grpc::Status DeleteRoot(grpc::ServerContext* context,
                          const v1::AdminDeleteRootRequest* request,
                          v1::AdminDeleteRootResponse* response) override;

 private:
  // Who is calling, for the log line of an admin write: "uid U pid P".
  std::string Caller(grpc::ServerContext& context) const;
  // Core::AuthorizeAdmin for the caller's credentials and the
  // "structd-admin" metadata.
  absl::Status CheckAdmin(grpc::ServerContext& context) const;
  // The skeleton of every per-channel admin call: authorize, find the
  // channel (by name or id), run `fn(channel)`, map the status.
  template <typename Fn>
  grpc::Status OnAdminChannel(grpc::ServerContext& context, const std::string& channel, Fn&& fn) {
    if (absl::Status s = CheckAdmin(context); !s.ok()) return ToGrpc(s);
    absl::StatusOr<std::shared_ptr<Channel>> ch = core_->Find(channel);
    if (!ch.ok()) return ToGrpc(ch.status());
    return ToGrpc(fn(**ch));
  }
  Core* core_;
  const PeerTable* peers_;
  Info info_;
};

// Fills a proto TypeInfo.
void ToProto(const RegisteredType& t, v1::TypeInfo* out);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_RPC_SERVICES_H_
