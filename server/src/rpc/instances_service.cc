#include "absl/strings/str_format.h"
#include "rpc/services.h"

namespace structd::server {
namespace {

// Validates a list of refs from a request: count bounds; refs stay opaque
// (the channel validates them against the arena).
absl::StatusOr<std::vector<shm::Ref>> RefsOf(
    const google::protobuf::RepeatedField<uint64_t>& bits, uint32_t max) {
  if (bits.empty() || static_cast<uint32_t>(bits.size()) > max) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "refs: %d given, allowed 1 to %d (split large calls)", bits.size(),
        max));
  }
  std::vector<shm::Ref> refs;
  refs.reserve(bits.size());
  for (uint64_t b : bits) refs.push_back(shm::Ref::FromBits(b));
  return refs;
}

}  // namespace

grpc::Status InstancesService::Allocate(grpc::ServerContext* context,
                                        const v1::AllocateRequest* request,
                                        v1::AllocateResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<shm::TypeToken> token = ParseToken(request->token());
    if (!token.ok()) return token.status();
    absl::StatusOr<std::vector<shm::Ref>> refs = c.channel->Allocate(c.session, *token, 1);
    if (refs.ok()) response->set_ref(refs->front().bits());
    return refs.status();
  });
}

grpc::Status InstancesService::AllocateBatch(
    grpc::ServerContext* context, const v1::AllocateBatchRequest* request,
    v1::AllocateBatchResponse* response) {
  if (request->count() == 0 || request->count() > core_->options().max_batch) {
    return ToGrpc(absl::InvalidArgumentError(absl::StrFormat(
        "count: %d, allowed 1 to %d (split large batches)", request->count(),
        core_->options().max_batch)));
  }
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<shm::TypeToken> token = ParseToken(request->token());
    if (!token.ok()) return token.status();
    const std::vector<uint32_t> into_slots(request->into_slots().begin(),
                                           request->into_slots().end());
    absl::StatusOr<std::vector<shm::Ref>> refs =
        c.channel->Allocate(c.session, *token, request->count(), into_slots);
    if (!refs.ok()) return refs.status();
    response->mutable_refs()->Reserve(static_cast<int>(refs->size()));
    for (shm::Ref r : *refs) response->add_refs(r.bits());
    return absl::OkStatus();
  });
}

grpc::Status InstancesService::Retain(grpc::ServerContext* context,
                                      const v1::RetainRequest* request,
                                      v1::RetainResponse*) {
  absl::StatusOr<std::vector<shm::Ref>> refs =
      RefsOf(request->refs(), core_->options().max_refs_per_call);
  if (!refs.ok()) return ToGrpc(refs.status());
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) { return c.channel->Retain(c.session, *refs); });
}

grpc::Status InstancesService::Release(grpc::ServerContext* context,
                                       const v1::ReleaseRequest* request,
                                       v1::ReleaseResponse* response) {
  absl::StatusOr<std::vector<shm::Ref>> refs =
      RefsOf(request->refs(), core_->options().max_refs_per_call);
  if (!refs.ok()) return ToGrpc(refs.status());
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<uint64_t> freed = c.channel->Release(c.session, *refs);
    if (freed.ok()) response->set_freed(*freed);
    return freed.status();
  });
}

grpc::Status InstancesService::StoreRefs(grpc::ServerContext* context,
                                         const v1::StoreRefsRequest* request,
                                         v1::StoreRefsResponse* response) {
  const uint32_t max = core_->options().max_refs_per_call;
  if (request->stores().empty() ||
      static_cast<uint32_t>(request->stores_size()) > max) {
    return ToGrpc(absl::InvalidArgumentError(absl::StrFormat(
        "stores: %d given, allowed 1 to %d (split large calls)",
        request->stores_size(), max)));
  }
  std::vector<Channel::RefStore> stores;
  stores.reserve(request->stores_size());
  for (const v1::RefStore& st : request->stores()) {
    stores.push_back({shm::Ref::FromBits(st.target()), st.field(),
                      shm::Ref::FromBits(st.value()), st.move()});
  }
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<uint64_t> freed = c.channel->StoreRefs(c.session, stores);
    if (freed.ok()) response->set_freed(*freed);
    return freed.status();
  });
}

grpc::Status InstancesService::SetRoot(grpc::ServerContext* context,
                                       const v1::SetRootRequest* request,
                                       v1::SetRootResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<shm::Ref> prev =
        c.channel->SetRoot(request->name(), shm::Ref::FromBits(request->ref()));
    if (prev.ok()) response->set_previous(prev->bits());
    return prev.status();
  });
}

grpc::Status InstancesService::GetRoot(grpc::ServerContext* context,
                                       const v1::GetRootRequest* request,
                                       v1::GetRootResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) -> absl::Status {
    absl::StatusOr<RootEntry> root = c.channel->GetRoot(request->name());
    if (!root.ok()) return root.status();
    response->set_ref(root->ref.bits());
    if (!root->token.is_zero()) response->set_token(root->token.ToHex());
    return absl::OkStatus();
  });
}

grpc::Status InstancesService::DeleteRoot(grpc::ServerContext* context,
                                          const v1::DeleteRootRequest* request,
                                          v1::DeleteRootResponse*) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) { return c.channel->DeleteRoot(request->name()); });
}

grpc::Status InstancesService::ListRoots(grpc::ServerContext* context,
                                         const v1::ListRootsRequest* request,
                                         v1::ListRootsResponse* response) {
  return OnJoinedChannel(*context, *core_, *peers_, request->channel(),
                         [&](const CallerChannel& c) {
    for (const RootEntry& r : c.channel->ListRoots()) {
      v1::Root* out = response->add_roots();
      out->set_name(r.name);
      out->set_ref(r.ref.bits());
      if (!r.token.is_zero()) out->set_token(r.token.ToHex());
    }
    return absl::OkStatus();
  });
}

}  // namespace structd::server
