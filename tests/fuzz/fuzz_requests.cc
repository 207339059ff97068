// Fuzz target: request decoding and handling. The first byte picks one of
// the daemon's unary rpcs; the rest is parsed as its request message and
// handed to the service handler, in-process, as an attached client's call.
// Placeholders make short inputs reach deep: a token "T<n>" names the n-th
// registered type, capability "O"/"M" the owner/member capability, and a
// ref field holding a value below 64 names the n-th allocated instance.
// After every 32 inputs the channel's consistency check must find nothing:
// no sequence of requests may corrupt the arena.

#include <grpcpp/test/server_context_test_spouse.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>

#include "rpc/services.h"
#include "spdlog/spdlog.h"
#include "testing/temp_dir.h"

namespace structd::server {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

struct State {
  testing::TempDir dir;
  std::unique_ptr<Core> core;
  PeerTable peers;
  std::string session;
  std::string owner, member;
  std::vector<std::string> tokens;
  std::vector<uint64_t> refs;
  std::unique_ptr<RegistryService> registry;
  std::unique_ptr<InstancesService> instances;
  std::unique_ptr<AdminService> admin;
  uint64_t inputs = 0;
};

State* g = nullptr;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_requests: set-up failed: %s\n", what);
    std::abort();
  }
}

// (Re)creates channel "f" with two types and a few instances.
void MakeChannel() {
  auto created = g->core->CreateChannel(g->session, "f", 131072, 8);
  if (!created.ok()) return;  // exists
  g->owner = created->owner_capability;
  g->member = created->member_capability;
  auto ch = *g->core->Joined(g->session, "f");
  g->tokens.clear();
  g->refs.clear();
  auto node = ch->RegisterType("N", {shm::FieldSpec::Scalar("v", shm::FieldKind::kU64),
                                     shm::FieldSpec::Ref("next"), shm::FieldSpec::String("s", 8),
                                     shm::FieldSpec::Mutex("m")});
  Check(node.ok(), "register N");
  g->tokens.push_back(node->type->token.ToHex());
  auto leaf = ch->RegisterType("L", {shm::FieldSpec::Scalar("x", shm::FieldKind::kF64),
                                     shm::FieldSpec::Ref("owner", node->type->token)});
  Check(leaf.ok(), "register L");
  g->tokens.push_back(leaf->type->token.ToHex());
  for (int t = 0; t < 2; ++t) {
    auto refs = ch->Allocate(g->session, t == 0 ? node->type->token : leaf->type->token, 4);
    Check(refs.ok(), "allocate");
    for (shm::Ref r : *refs) g->refs.push_back(r.bits());
  }
}

void SetUp() {
  g = new State;
  // The state lives as long as the process (fuzzers end with exit());
  // its files go with it.
  std::atexit([] { std::filesystem::remove_all(g->dir.path()); });
  CoreOptions o;
  o.state_dir = g->dir.path();
  o.arena.extent_size = 131072;
  o.arena.max_extents = 8;
  o.max_batch = 64;
  o.max_refs_per_call = 64;
  auto core = Core::Open(o);
  Check(core.ok(), "core");
  g->core = std::move(*core);
  PeerCredentials me{true, getpid(), getuid(), getgid(), ProcessHandle::OfPid(getpid())};
  g->peers.RecordPeer("", me);
  auto s = g->core->Attach(me, "fuzz");
  Check(s.ok(), "attach");
  g->session = s->id;
  g->registry = std::make_unique<RegistryService>(g->core.get(), &g->peers);
  g->instances = std::make_unique<InstancesService>(g->core.get(), &g->peers);
  g->admin = std::make_unique<AdminService>(
      g->core.get(), &g->peers,
      AdminService::Info{"fuzz", "/fuzz.sock", g->dir.path(), std::chrono::steady_clock::now()});
  MakeChannel();
}

// Replaces placeholders, recursively.
void Fixup(Message& m) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(m, f); ++j) Fixup(*r->MutableRepeatedMessage(&m, f, j));
      } else if (r->HasField(m, f)) {
        Fixup(*r->MutableMessage(&m, f));
      }
      continue;
    }
    if (f->type() == FieldDescriptor::TYPE_STRING && !f->is_repeated()) {
      std::string v = r->GetString(m, f);
      if (f->name() == "token" && v.size() == 2 && v[0] == 'T') {
        size_t n = static_cast<size_t>(v[1] - '0');
        if (n < g->tokens.size()) r->SetString(&m, f, g->tokens[n]);
      } else if (f->name().find("capability") != std::string::npos) {
        if (v == "O") r->SetString(&m, f, g->owner);
        if (v == "M") r->SetString(&m, f, g->member);
      }
      continue;
    }
    if (f->type() == FieldDescriptor::TYPE_FIXED64) {
      auto map = [](uint64_t v) { return v < 64 && v < g->refs.size() ? g->refs[v] : v; };
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(m, f); ++j) {
          r->SetRepeatedUInt64(&m, f, j, map(r->GetRepeatedUInt64(m, f, j)));
        }
      } else {
        r->SetUInt64(&m, f, map(r->GetUInt64(m, f)));
      }
    }
  }
}

template <typename Service, typename Request, typename Response>
void Call(Service& service,
          grpc::Status (Service::*method)(grpc::ServerContext*, const Request*, Response*),
          const uint8_t* data, size_t size) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  Fixup(request);
  grpc::ServerContext context;
  grpc::testing::ServerContextTestSpouse spouse(&context);
  spouse.AddClientMetadata("structd-session", g->session);
  Response response;
  (void)(service.*method)(&context, &request, &response);
}

void Dispatch(uint8_t which, const uint8_t* d, size_t n) {
  RegistryService& reg = *g->registry;
  InstancesService& ins = *g->instances;
  AdminService& adm = *g->admin;
  switch (which % 24) {
    case 0: return Call(reg, &RegistryService::CreateChannel, d, n);
    case 1: return Call(reg, &RegistryService::JoinChannel, d, n);
    case 2: return Call(reg, &RegistryService::DropChannel, d, n);
    case 3: return Call(reg, &RegistryService::RegisterType, d, n);
    case 4: return Call(reg, &RegistryService::DescribeType, d, n);
    case 5: return Call(reg, &RegistryService::ListTypes, d, n);
    case 6: return Call(reg, &RegistryService::SealRegistry, d, n);
    case 7: return Call(ins, &InstancesService::Allocate, d, n);
    case 8: return Call(ins, &InstancesService::AllocateBatch, d, n);
    case 9: return Call(ins, &InstancesService::Retain, d, n);
    case 10: return Call(ins, &InstancesService::Release, d, n);
    case 11: return Call(ins, &InstancesService::StoreRefs, d, n);
    case 12: return Call(ins, &InstancesService::SetRoot, d, n);
    case 13: return Call(ins, &InstancesService::GetRoot, d, n);
    case 14: return Call(ins, &InstancesService::DeleteRoot, d, n);
    case 15: return Call(ins, &InstancesService::ListRoots, d, n);
    case 16: return Call(adm, &AdminService::ListChannels, d, n);
    case 17: return Call(adm, &AdminService::ListTypes, d, n);
    case 18: return Call(adm, &AdminService::ListInstances, d, n);
    case 19: return Call(adm, &AdminService::InspectInstance, d, n);
    case 20: return Call(adm, &AdminService::ListRoots, d, n);
    case 21: return Call(adm, &AdminService::GetMemory, d, n);
    case 22: return Call(adm, &AdminService::CheckArena, d, n);
    default: return Call(adm, &AdminService::GetStatus, d, n);
  }
}

}  // namespace
}  // namespace structd::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace structd::server;
  if (g == nullptr) {
    spdlog::set_level(spdlog::level::off);
    google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 etc. is expected here
    SetUp();
  }
  if (size == 0) return 0;
  Dispatch(data[0], data + 1, size - 1);
  if (auto ch = g->core->Find("f"); !ch.ok() || (*ch)->dropped()) {
    // Dropped: a new session lets the old channel go; start over.
    g->core->Detach(g->session);
    PeerCredentials me{true, getpid(), getuid(), getgid(), ProcessHandle::OfPid(getpid())};
    auto s = g->core->Attach(me, "fuzz");
    if (s.ok()) g->session = s->id;
    MakeChannel();
  }
  if (++g->inputs % 32 == 0) {
    if (auto ch = g->core->Find("f"); ch.ok()) {
      CheckReport report = (*ch)->Check();
      if (!report.problems.empty()) {
        std::fprintf(stderr, "fuzz_requests: requests corrupted the arena: %s\n",
                     report.problems[0].what.c_str());
        std::abort();
      }
    }
  }
  return 0;
}
