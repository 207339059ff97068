#ifndef STRUCTD_TESTS_TESTING_GRPC_CLIENT_H_
#define STRUCTD_TESTS_TESTING_GRPC_CLIENT_H_

// A raw gRPC client of structd.v1 for tests: one channel, the four stubs,
// and an open Attach stream (the session).

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "structd/v1/admin.grpc.pb.h"
#include "structd/v1/instances.grpc.pb.h"
#include "structd/shm/arena.h"
#include "structd/v1/memory.pb.h"
#include "structd/v1/registry.grpc.pb.h"
#include "structd/v1/session.grpc.pb.h"

namespace structd::testing {

class GrpcClient {
 public:
  // Connects; attaches unless `attach` is false.
  explicit GrpcClient(const std::string& target, bool attach = true);
  ~GrpcClient();

  // A context carrying this client's session id.
  std::unique_ptr<grpc::ClientContext> Ctx() const;
  const std::string& session_id() const { return session_id_; }
  // Ends the session by closing the Attach stream.
  void Detach();
  // Creates channel `name` (default arena options); the reply, or the
  // daemon's status.
  absl::StatusOr<v1::CreateChannelResponse> CreateChannel(const std::string& name);
  // Joins `channel` with `capability`; false on any error.
  bool Join(const std::string& channel, const std::string& capability,
            v1::JoinChannelResponse* joined = nullptr);
  // Waits for the daemon to end the Attach stream; returns its final status
  // (DEADLINE_EXCEEDED if it is still open after `timeout`) and the last
  // event read into `last_event`.
  grpc::Status AwaitAttachEnd(std::chrono::milliseconds timeout,
                              v1::AttachEvent* last_event = nullptr);
  // Maps joined `channel`'s arena as a member does: its files' descriptors
  // from the memory socket (memory.proto). The status of the first refusal.
  absl::StatusOr<std::unique_ptr<shm::Arena>> MapArena(const std::string& channel,
                                                       shm::Access access =
                                                           shm::Access::kReadWrite);
  // One file of `channel`'s arena from the memory socket, as MapArena asks.
  absl::StatusOr<base::UniqueFd> FetchArenaFile(const std::string& channel, shm::ArenaFile file);
  const std::string& memory_socket() const { return memory_socket_; }
  const std::string& session_secret() const { return session_secret_; }

  // Registers a one-field type "T" in `channel`, a call that needs the
  // channel usable (not damaged, joined): the gRPC code.
  grpc::StatusCode TouchChannel(const std::string& channel);
  // Live instances in channel `name`, through Admin.ListChannels; ~0 if
  // the channel is not listed.
  uint64_t LiveInstances(const std::string& name);

  v1::Registry::Stub& registry() { return *registry_; }
  v1::Instances::Stub& instances() { return *instances_; }
  v1::Admin::Stub& admin() { return *admin_; }
  v1::Session::Stub& session() { return *session_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Registry::Stub> registry_;
  std::unique_ptr<v1::Instances::Stub> instances_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::Session::Stub> session_;
  std::unique_ptr<grpc::ClientContext> attach_ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AttachRequest, v1::AttachEvent>>
      attach_;
  std::string session_id_;
  std::string session_secret_;
  std::string memory_socket_;
};

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_GRPC_CLIENT_H_
