// The client library against a real daemon: this test process uses the
// library, and so do worker processes (structd_test_client) started with
// fork+exec.

#include <poll.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <atomic>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "structd/client/admin.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/client/port.h"
#include "testing/client_connect.h"
#include "testing/client_types.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/spawned_process.h"
#include "testing/temp_dir.h"
#include "testing/thread_state.h"

namespace structd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using client::Channel;
using client::Client;
using client::Owned;
using client::Ref;
using client::RefStores;

// A holder of a Counter (recyclable) through a ref field.
#define CLIENT_TEST_HOLDER_FIELDS(F) F(item, ref(Counter))
STRUCTD_STRUCT(Holder, CLIENT_TEST_HOLDER_FIELDS);

// A worker process: structd_test_client MODE SOCKET CHANNEL CAPABILITY ARGS.
std::unique_ptr<SpawnedProcess> Worker(const DaemonProcess& daemon,
                                       const client::CreatedChannel& ch,
                                       const std::string& mode,
                                       std::vector<std::string> args = {}) {
  std::vector<std::string> argv = {STRUCTD_TEST_CLIENT, mode, daemon.socket(),
                                   ch.channel->name(), ch.member_capability};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<SpawnedProcess>(argv);
}

// Polls the Admin API until `channel` has `want` live instances (or 5 s).
uint64_t AwaitLive(GrpcClient& admin, const std::string& channel, uint64_t want) {
  uint64_t live = admin.LiveInstances(channel);
  for (int i = 0; i < 500 && live != want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    live = admin.LiveInstances(channel);
  }
  return live;
}

// A daemon, this process connected to it, and channel "c" it created.
class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    me_ = ConnectTo(daemon_);
    ASSERT_NE(me_, nullptr);
    auto ch = me_->CreateChannel("c");
    ASSERT_TRUE(ch.ok()) << ch.status();
    created_ = std::move(*ch);
  }
  Channel& c() { return *created_.channel; }
  // structctl check's verdict on channel "c" (refcounts match the census).
  bool CensusIsClean() {
    client::AdminOptions ao;
    ao.socket = daemon_.socket();
    auto admin = client::AdminClient::Connect(ao);
    EXPECT_TRUE(admin.ok()) << admin.status();
    if (!admin.ok()) return false;
    auto check = (*admin)->Check("c");
    EXPECT_TRUE(check.ok()) << check.status();
    return check.ok() && check->ok;
  }
  std::unique_ptr<SpawnedProcess> Worker(const std::string& mode,
                                         std::vector<std::string> args = {}) {
    return testing::Worker(daemon_, created_, mode, std::move(args));
  }

  DaemonProcess daemon_;
  std::unique_ptr<Client> me_;
  client::CreatedChannel created_;
};

TEST(ClientConnectTest, ConnectWithoutADaemonSaysWhereItLookedAndHowToStartOne) {
  TempDir dir;
  client::ClientOptions o;
  o.socket = dir.path() + "/none.sock";
  o.connect_timeout = std::chrono::milliseconds(300);
  auto c = Client::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("no structd at " + o.socket));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("start it"));
}

TEST_F(ClientTest, WorkerProcessesCountExactlyThroughMappedFields) {
  auto counter = c().Allocate<Counter>();
  ASSERT_TRUE(counter.ok()) << counter.status();
  ASSERT_TRUE((*counter)->label().Write("requests").ok());
  ASSERT_TRUE(c().SetRoot("requests", counter->ref()).ok());
  std::vector<std::unique_ptr<SpawnedProcess>> workers;
  for (int i = 0; i < 4; ++i) workers.push_back(Worker("count", {"requests", "25000"}));
  for (auto& w : workers) {
    EXPECT_EQ(w->ReadLine(), "done");
    EXPECT_EQ(w->Wait(), 0);
  }
  EXPECT_EQ((*counter)->hits().load(), 100000u);
  EXPECT_EQ(*(*counter)->label().Read(), "requests");
}

TEST_F(ClientTest, EachProcessSeesTheBehaviorItBoundToASharedType) {
  auto v = c().Allocate<Vector>();
  ASSERT_TRUE(v.ok()) << v.status();
  (*v)->x().store(3);
  (*v)->y().store(4);
  ASSERT_TRUE(c().SetRoot("v", v->ref()).ok());

  auto printer = Worker("behavior", {"v", "print"});
  auto computer = Worker("behavior", {"v", "norm"});
  auto unbound = Worker("unbound", {"v"});
  EXPECT_EQ(printer->ReadLine(), "result Vector(3, 4)");
  EXPECT_EQ(computer->ReadLine(), "result 5");
  std::string error = unbound->ReadLine();
  EXPECT_THAT(error, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(error, HasSubstr("no behavior bound for type 'Vector' (token "));
  EXPECT_THAT(error, HasSubstr("in this process"));
  EXPECT_EQ(printer->Wait(), 0);
  EXPECT_EQ(computer->Wait(), 0);
  EXPECT_EQ(unbound->Wait(), 4);

  // This process: unbound, then bound, then sealed.
  auto before = c().Call(**v, &VectorMethods::describe);
  EXPECT_EQ(before.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(c().Bind<Vector>(VectorMethods{[](const Vector& v) {
                return "mine " + std::to_string(v.x().load() + v.y().load());
              }}).ok());
  auto mine = c().Call(**v, &VectorMethods::describe);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_THAT(*mine, StartsWith("mine 7"));
  me_->SealBindings();
  absl::Status late = c().Bind<Vector>(VectorMethods{});
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(late.message()), HasSubstr("sealed"));
  // A table of another C++ type is not confused with the bound one.
  struct OtherMethods {
    std::function<int(const Vector&)> f;
  };
  EXPECT_EQ(c().Behavior<OtherMethods>(**v).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ClientTest, ALayoutMismatchNamesBothLayouts) {
  ASSERT_TRUE(c().Use<Vector>().ok());
  auto other = c().Use<Vector3>();
  ASSERT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  std::string message(other.status().message());
  EXPECT_THAT(message, HasSubstr("type 'Vector'"));
  EXPECT_THAT(message, HasSubstr("z"));  // this program's layout
  EXPECT_THAT(message, HasSubstr("fingerprint"));
  auto worker = Worker("mismatch");
  EXPECT_THAT(worker->ReadLine(), HasSubstr("FAILED_PRECONDITION"));
  EXPECT_EQ(worker->Wait(), 4);
}

TEST_F(ClientTest, OwnedRetainsAndReleasesAndViewsCheckTypes) {
  auto counter = c().Allocate<Counter>();
  ASSERT_TRUE(counter.ok()) << counter.status();
  Ref ref = counter->ref();
  // Clone and drop are applied by the daemon in batches: Flush() first.
  auto refcount = [&] {
    EXPECT_TRUE(c().Flush().ok());
    return c().arena().Resolve(ref)->header().refcount.load();
  };
  EXPECT_EQ(refcount(), 1u);
  {
    // Clones share the session's one reference: counted in this process,
    // the daemon's count does not move.
    auto clone = counter->Clone();
    ASSERT_TRUE(clone.ok()) << clone.status();
    EXPECT_EQ(refcount(), 1u);
    Owned<Counter> moved = std::move(*clone);
    auto second = moved.Clone();
    ASSERT_TRUE(second.ok()) << second.status();
    counter->Reset();  // the original goes first: the clones keep it alive
    EXPECT_EQ(refcount(), 1u);
    EXPECT_TRUE(c().View<Counter>(ref).ok());
    second->Reset();
    EXPECT_TRUE(c().View<Counter>(ref).ok());
    // A disowned clone takes a reference of its own.
    Ref disowned = moved.Disown();
    EXPECT_EQ(disowned, ref);
    EXPECT_EQ(refcount(), 1u);
    ASSERT_TRUE(c().Release({disowned}).ok());
  }
  EXPECT_EQ(c().View<Counter>(ref).status().code(), absl::StatusCode::kNotFound);
  counter = c().Allocate<Counter>();
  ASSERT_TRUE(counter.ok()) << counter.status();
  ref = counter->ref();
  EXPECT_EQ(refcount(), 1u);
  // A view of the wrong type, a forged ref, then a stale one.
  auto wrong = c().View<Vector>(ref);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("'Counter'"));
  EXPECT_EQ(c().View<Counter>(Ref::FromBits(0x123456789abcdef0ull)).status().code(),
            absl::StatusCode::kInvalidArgument);
  counter->Reset();
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().View<Counter>(ref).status().code(), absl::StatusCode::kNotFound);
  // A batch, released in one call.
  auto batch = c().AllocateBatch<Counter>(1000);
  ASSERT_TRUE(batch.ok()) << batch.status();
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(admin.LiveInstances("c"), 1000u + c().SpareCount());
  ASSERT_TRUE(c().Release(*batch).ok());
  EXPECT_EQ(admin.LiveInstances("c"), c().SpareCount());
  // The stock for Allocate is the session's too, and goes back on demand.
  EXPECT_GT(c().ReleaseSpares(), 0u);
  EXPECT_EQ(c().SpareCount(), 0u);
  EXPECT_EQ(admin.LiveInstances("c"), 0u);
}

// View<T> caches what T looks like per channel and resolves without a
// lock: once warm, a stale, mistyped or forged ref is still an error, and
// views racing allocations and drops on other threads see either a live
// instance of their type or an error, never a wild read.
TEST_F(ClientTest, WarmViewsStillCatchStaleMistypedAndForgedRefs) {
  auto counter = c().Allocate<Counter>();
  auto vector = c().Allocate<Vector>();
  ASSERT_TRUE(counter.ok() && vector.ok());
  ASSERT_TRUE(c().View<Counter>(counter->ref()).ok());  // warms both caches
  ASSERT_TRUE(c().View<Vector>(vector->ref()).ok());
  EXPECT_EQ(c().View<Vector>(counter->ref()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c().View<Counter>(vector->ref()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Ref forged = Ref::Make(counter->ref().extent_id(), counter->ref().offset() + 16,
                         counter->ref().generation_tag());
  EXPECT_EQ(c().View<Counter>(forged).status().code(), absl::StatusCode::kInvalidArgument);
  Ref stale = counter->ref();
  counter->Reset();
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().View<Counter>(stale).status().code(), absl::StatusCode::kNotFound);

  auto batch = c().AllocateBatch<Counter>(200);
  ASSERT_TRUE(batch.ok()) << batch.status();
  std::vector<Ref> refs;
  for (auto& o : *batch) {
    o->hits().store(7);
    refs.push_back(o.ref());
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> seen_live{0}, seen_gone{0}, wrong{0};
  std::vector<std::thread> viewers;
  for (int t = 0; t < 3; ++t) {
    viewers.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); !stop.load(); i = (i + 7) % refs.size()) {
        auto v = c().View<Counter>(refs[i]);
        if (v.ok()) {
          // A view owns nothing: what it reads after a racing drop may be
          // anything, but never outside the arena.
          (void)v->hits().load();
          ++seen_live;
        } else if (v.status().code() == absl::StatusCode::kNotFound) {
          ++seen_gone;
        } else {
          ++wrong;
        }
      }
    });
  }
  for (size_t i = 0; i < batch->size(); i += 2) (*batch)[i].Reset();  // drops under the views
  ASSERT_TRUE(c().Flush().ok());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(c().Allocate<Counter>().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop = true;
  for (auto& v : viewers) v.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(seen_live.load(), 0u);
  EXPECT_GT(seen_gone.load(), 0u);
  for (size_t i = 1; i < batch->size(); i += 2) {  // still owned: intact
    auto v = c().View<Counter>(refs[i]);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->hits().load(), 7u);
  }
}

TEST_F(ClientTest, AGraphIsHandedToAnotherProcessAsOneRef) {
  constexpr uint32_t kNodes = 50000;  // 1.6 MB: grows the 1 MiB extents, mapped lazily by the reader
  auto nodes = c().AllocateBatch<Node>(kNodes);
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_GT(c().arena().extent_count(), 1u);  // the reader maps the new ones lazily
  client::RefStores links;
  for (uint32_t i = 0; i < kNodes; ++i) {
    (*nodes)[i]->value().store(i);
    if (i + 1 < kNodes) links.Move((*nodes)[i]->next(), (*nodes)[i + 1]);
  }
  ASSERT_TRUE(c().Store(links).ok());
  EXPECT_FALSE((*nodes)[1]);  // its reference moved into node 0's field
  ASSERT_TRUE(c().SetRoot("list", (*nodes)[0].ref()).ok());
  (*nodes)[0].Reset();  // the root keeps the whole list alive
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(admin.LiveInstances("c"), kNodes);

  auto reader = Worker("sum", {"list"});
  EXPECT_EQ(reader->ReadLine(),
            "sum " + std::to_string(uint64_t{kNodes} * (kNodes - 1) / 2) + " count " +
                std::to_string(kNodes));
  EXPECT_EQ(reader->Wait(), 0);
  // Dropping the root frees the list, field by field.
  ASSERT_TRUE(c().DeleteRoot("list").ok());
  EXPECT_EQ(admin.LiveInstances("c"), 0u);
}

// Allocate<T> takes from this process's stock: with the daemon stopped
// (SIGSTOP: no call could be answered), allocations and drops go on.
TEST_F(ClientTest, AllocateFromTheStockNeedsNoDaemon) {
  auto first = c().Allocate<Counter>();  // sets the stock up
  ASSERT_TRUE(first.ok()) << first.status();
  const size_t spares = c().SpareCount();
  ASSERT_GT(spares, 0u);
  ASSERT_EQ(kill(daemon_.pid(), SIGSTOP), 0);
  std::vector<Owned<Counter>> made;
  for (size_t i = 0; i < spares; ++i) {
    auto start = std::chrono::steady_clock::now();
    auto one = c().Allocate<Counter>();
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
    EXPECT_EQ((*one)->hits().load(), 0u) << "zero-filled";
    (*one)->hits().store(i + 1);
    made.push_back(std::move(*one));
  }
  // Dropping what it alone owns recycles in place: allocating and dropping
  // goes on without the daemon for as long as one likes.
  ASSERT_EQ(c().SpareCount(), 0u);
  made.pop_back();
  ASSERT_EQ(c().SpareCount(), 1u);
  for (int i = 0; i < 10000; ++i) {
    auto one = c().Allocate<Counter>();
    ASSERT_TRUE(one.ok()) << i << ": " << one.status();
    ASSERT_EQ((*one)->hits().load(), 0u) << "zero-filled after a recycle";
    (*one)->hits().store(99);
    Ref old = one->ref();
    one->Reset();
    ASSERT_EQ(c().View<Counter>(old).status().code(), absl::StatusCode::kNotFound)
        << "a ref to the dropped instance is stale at once";
  }
  made.resize(spares / 2);  // recycled too
  ASSERT_EQ(kill(daemon_.pid(), SIGCONT), 0);
  for (size_t i = 0; i < made.size(); ++i) EXPECT_EQ(made[i]->hits().load(), i + 1);
  // A ref from the stock is an ordinary one: released over gRPC like any.
  Ref ref = made.back().Disown();
  made.pop_back();
  ASSERT_TRUE(c().Release({ref}).ok());
  EXPECT_EQ(c().View<Counter>(ref).status().code(), absl::StatusCode::kNotFound);
  // What is live: the first, the kept half, and no more once the stock
  // (and a refill that was waiting for the daemon) is given back.
  ASSERT_TRUE(c().Flush().ok());
  c().ReleaseSpares();
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(AwaitLive(admin, "c", 1 + made.size()), 1 + made.size());
}

// A type described at run time (what the Python package uses) is the same
// type as the STRUCTD_STRUCT with the same key and fields: same token, same
// instances, and the same stock and in-place recycling.
TEST_F(ClientTest, ARunTimeTypeMeetsTheCompiledOneAndSharesItsFastPaths) {
  using client::DynamicStruct;
  auto counter = DynamicStruct::Make("Counter", Counter::FieldSpecs());
  ASSERT_TRUE(counter.ok()) << counter.status();
  EXPECT_EQ(*DynamicStruct::Make("Counter", Counter::FieldSpecs()), *counter) << "interned";
  auto dynamic_type = c().Use(**counter);
  auto compiled_type = c().Use<Counter>();
  ASSERT_TRUE(dynamic_type.ok() && compiled_type.ok());
  EXPECT_EQ(dynamic_type->token, compiled_type->token);

  auto made = c().AllocateBatch(**counter, 1);
  ASSERT_TRUE(made.ok()) << made.status();
  client::Owned<client::DynamicView> one = std::move((*made)[0]);
  const size_t hits = *(*counter)->FindField("hits");
  one->scalar<uint64_t>(hits).store(41);
  auto compiled_view = c().View<Counter>(one.ref());
  ASSERT_TRUE(compiled_view.ok()) << compiled_view.status();
  EXPECT_EQ(compiled_view->hits().load(), 41u);
  auto dynamic_view = c().View(**counter, compiled_view->ref());
  ASSERT_TRUE(dynamic_view.ok()) << dynamic_view.status();
  EXPECT_EQ(dynamic_view->scalar<uint64_t>(hits).fetch_add(1), 41u);

  // Its own stock: dropping the only reference recycles in place, and the
  // next allocation takes it back, with no call to the daemon.
  EXPECT_GT(c().SpareCount(), 0u);
  const size_t spares = c().SpareCount();
  const Ref dropped = one.ref();
  one.Reset();
  EXPECT_EQ(c().SpareCount(), spares + 1) << "recycled into the stock";
  EXPECT_EQ(c().View(**counter, dropped).status().code(), absl::StatusCode::kNotFound);

  // Another layout under the same key is the usual clear error; so is a bad
  // field list.
  auto other = DynamicStruct::Make(
      "Counter", {shm::FieldSpec::Scalar("hits", shm::FieldKind::kU32)});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(c().Use(**other).status().code(), absl::StatusCode::kFailedPrecondition);
  auto bad = DynamicStruct::Make("Bad", {shm::FieldSpec::String("s", 0)});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("type 'Bad'"));
  // A view of a C++-typed instance as another run-time type is refused.
  auto vector = DynamicStruct::Make("Vector", Vector::FieldSpecs());
  ASSERT_TRUE(vector.ok());
  auto live = c().Allocate<Counter>();
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(c().View(**vector, live->ref()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Clone() from many threads at once on one const Owned, and clones of
// clones dropped in any order: the group counts exactly, the session's
// reference stays one, and the last Owned out recycles the instance.
TEST_F(ClientTest, ClonesFromManyThreadsShareOneReference) {
  auto original = c().Allocate<Counter>();
  ASSERT_TRUE(original.ok()) << original.status();
  const Ref ref = original->ref();
  const Owned<Counter>& shared = *original;
  constexpr int kThreads = 4;
  constexpr int kRounds = 20000;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<Owned<Counter>> kept;
      for (int i = 0; i < kRounds; ++i) {
        auto clone = shared.Clone();
        if (!clone.ok()) {
          failures.fetch_add(1);
          continue;
        }
        (*clone)->hits().fetch_add(1);
        auto of_clone = clone->Clone();  // a clone of a clone joins the group
        if (!of_clone.ok()) failures.fetch_add(1);
        if (i % 7 == 0) kept.push_back(std::move(*of_clone));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ((*original)->hits().load(), uint64_t{kThreads} * kRounds);
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().arena().Resolve(ref)->header().refcount.load(), 1u)
      << "clones never reach the daemon";
  const size_t spares = c().SpareCount();
  original->Reset();
  EXPECT_EQ(c().SpareCount(), spares + 1) << "the last one out recycles";
  EXPECT_EQ(c().View<Counter>(ref).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(CensusIsClean());
}

// An Owned from Allocate is recycled in place when dropped only if no
// other reference exists: not after a Clone, not while another Owned (a
// Retain) or a root holds it, and never for a type with ref fields.
TEST_F(ClientTest, ADroppedInstanceIsRecycledOnlyWhenNothingElseHoldsIt) {
  auto a = c().Allocate<Counter>();
  ASSERT_TRUE(a.ok()) << a.status();
  const Ref ref = a->ref();
  (*a)->hits().store(5);
  auto retained = c().Retain<Counter>(ref);  // a second reference, by call
  ASSERT_TRUE(retained.ok()) << retained.status();
  const size_t before = c().SpareCount();
  a->Reset();
  EXPECT_EQ(c().SpareCount(), before) << "not recycled: another reference exists";
  EXPECT_EQ((*retained)->hits().load(), 5u);
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().arena().Resolve(ref)->header().refcount.load(), 1u);
  retained->Reset();  // not from Allocate: queued, freed by the daemon
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().View<Counter>(ref).status().code(), absl::StatusCode::kNotFound);

  // Clones count in this process: the last one out recycles.
  auto b = c().Allocate<Counter>();
  ASSERT_TRUE(b.ok());
  auto clone = b->Clone();
  ASSERT_TRUE(clone.ok());
  const size_t with_clone = c().SpareCount();
  b->Reset();
  EXPECT_EQ(c().SpareCount(), with_clone) << "a clone still holds it";
  clone->Reset();
  EXPECT_EQ(c().SpareCount(), with_clone + 1) << "the last clone out recycles it";

  // A clone disowned (or moved into a field) takes a reference of its
  // own, queued: the group's may not be recycled under it any more.
  auto e = c().Allocate<Counter>();
  ASSERT_TRUE(e.ok());
  auto e_clone = e->Clone();
  ASSERT_TRUE(e_clone.ok());
  const Ref e_ref = e_clone->Disown();
  const size_t before_e = c().SpareCount();
  e->Reset();
  EXPECT_EQ(c().SpareCount(), before_e) << "a disowned clone holds it";
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_TRUE(c().View<Counter>(e_ref).ok()) << "freed under a disowned clone";
  ASSERT_TRUE(c().Release({e_ref}).ok());
  EXPECT_EQ(c().View<Counter>(e_ref).status().code(), absl::StatusCode::kNotFound);

  auto rooted = c().Allocate<Counter>();
  ASSERT_TRUE(rooted.ok());
  ASSERT_TRUE(c().SetRoot("keep", rooted->ref()).ok());
  const Ref kept = rooted->ref();
  rooted->Reset();
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_TRUE(c().View<Counter>(kept).ok()) << "the root still holds it";

  auto node = c().Allocate<Node>();
  ASSERT_TRUE(node.ok());
  const Ref node_ref = node->ref();
  const size_t nodes_before = c().SpareCount();
  node->Reset();
  EXPECT_EQ(c().SpareCount(), nodes_before) << "Node has a ref field: never recycled";
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().View<Node>(node_ref).status().code(), absl::StatusCode::kNotFound);

  auto d = c().Allocate<Counter>();
  ASSERT_TRUE(d.ok());
  const Ref dropped = d->ref();
  const size_t spares = c().SpareCount();
  d->Reset();
  EXPECT_EQ(c().SpareCount(), spares + 1) << "sole and recyclable: back in the stock";
  EXPECT_EQ(c().View<Counter>(dropped).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(CensusIsClean());
}

// Review findings on recycling (issue 17), each seen failing before its fix:
// an Owned handed to a Store with move is no longer the only reference
// (the field may have it even when the call fails), and a type with a
// mutex field is never recycled (its mutex must be initialized, not
// zeroed).
TEST_F(ClientTest, MovedIntoAStoreOrHoldingAMutexIsNeverRecycled) {
  auto holder = c().Allocate<Holder>();
  ASSERT_TRUE(holder.ok()) << holder.status();
  const Ref stale_holder = holder->ref();
  auto stale_view = c().View<Holder>(stale_holder);
  ASSERT_TRUE(stale_view.ok());
  holder->Reset();
  ASSERT_TRUE(c().Flush().ok());
  auto item = c().Allocate<Counter>();
  ASSERT_TRUE(item.ok());
  const Ref item_ref = item->ref();
  RefStores batch;
  batch.Move(stale_view->item(), *item);
  EXPECT_EQ(c().Store(batch).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(*item) << "a refused store moves nothing";
  const size_t spares = c().SpareCount();
  item->Reset();
  EXPECT_EQ(c().SpareCount(), spares) << "not recycled: it went to a Store";
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().View<Counter>(item_ref).status().code(), absl::StatusCode::kNotFound);

  // A clone moved into a field: the field has a reference of its own, and
  // the original's drop neither recycles nor frees the instance.
  auto live_holder = c().Allocate<Holder>();
  ASSERT_TRUE(live_holder.ok()) << live_holder.status();
  auto kept = c().Allocate<Counter>();
  ASSERT_TRUE(kept.ok());
  (*kept)->hits().store(42);
  const Ref kept_ref = kept->ref();
  auto kept_clone = kept->Clone();
  ASSERT_TRUE(kept_clone.ok());
  ASSERT_TRUE(c().Store((*live_holder)->item(), std::move(*kept_clone)).ok());
  EXPECT_FALSE(*kept_clone) << "moved into the field";
  const size_t before_drop = c().SpareCount();
  kept->Reset();
  EXPECT_EQ(c().SpareCount(), before_drop) << "the field holds it: not recycled";
  ASSERT_TRUE(c().Flush().ok());
  auto in_field = c().View<Counter>((*live_holder)->item().load());
  ASSERT_TRUE(in_field.ok()) << in_field.status();
  EXPECT_EQ(in_field->ref(), kept_ref);
  EXPECT_EQ(in_field->hits().load(), 42u);
  EXPECT_EQ(c().arena().Resolve(kept_ref)->header().refcount.load(), 1u) << "the field's";

  for (int i = 0; i < 3; ++i) {
    auto guarded = c().Allocate<Guarded>();
    ASSERT_TRUE(guarded.ok()) << guarded.status();
    auto guard = (*guarded)->lock().Lock();
    ASSERT_TRUE(guard.ok()) << "round " << i << ": " << guard.status();
  }
}

// Several processes and this one allocate and drop the same type one by
// one, at once: no instance is handed out twice (each keeps its stamp
// until dropped), and when they are gone only this process's remain.
TEST_F(ClientTest, ProcessesAllocatingAndDroppingOneTypeAtOnceLoseNothing) {
  std::vector<std::unique_ptr<SpawnedProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(Worker("churn", {"20000"}));
  std::vector<Owned<Counter>> mine;
  for (int i = 0; i < 20000; ++i) {
    auto one = c().Allocate<Counter>();
    ASSERT_TRUE(one.ok()) << one.status();
    ASSERT_EQ((*one)->hits().load(), 0u);
    (*one)->hits().store(static_cast<uint64_t>(i) + 1);
    mine.push_back(std::move(*one));
    if (mine.size() > 50) mine.erase(mine.begin());
  }
  for (auto& w : workers) {
    EXPECT_EQ(w->ReadLine(std::chrono::seconds(120)), "done");
    EXPECT_EQ(w->Wait(), 0);
  }
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_EQ(mine[i]->hits().load(), 20000 - mine.size() + i + 1);
  }
  ASSERT_TRUE(c().Flush().ok());
  c().ReleaseSpares();  // (a refill still under way gives its share back too)
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(AwaitLive(admin, "c", mine.size()), mine.size());
  EXPECT_TRUE(CensusIsClean());
}

// Retain<T> raises the count in shared memory and keeps the reference in
// the session record (doc/lifecycle.md, "Retain"): with the daemon
// stopped, retains and drops go on; the references are ordinary ones.
TEST_F(ClientTest, RetainNeedsNoDaemonAndItsReferencesAreOrdinaryOnes) {
  auto made = c().Allocate<Counter>();
  ASSERT_TRUE(made.ok()) << made.status();
  (*made)->hits().store(5);
  const Ref ref = made->ref();
  auto warm = c().Retain<Counter>(ref);  // opens the session record
  ASSERT_TRUE(warm.ok()) << warm.status();
  ASSERT_EQ(kill(daemon_.pid(), SIGSTOP), 0);
  std::vector<Owned<Counter>> held;
  for (int i = 0; i < 200; ++i) {
    auto start = std::chrono::steady_clock::now();
    auto one = c().Retain<Counter>(ref);
    ASSERT_TRUE(one.ok()) << i << ": " << one.status();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
    EXPECT_EQ((*one)->hits().load(), 5u);
    held.push_back(std::move(*one));
  }
  auto batch = c().RetainBatch<Counter>(std::vector<Ref>(10, ref));
  ASSERT_TRUE(batch.ok()) << batch.status();
  held.resize(100);  // drops: queued for the daemon
  ASSERT_EQ(kill(daemon_.pid(), SIGCONT), 0);
  // One retained reference given back over gRPC, as any other.
  const Ref disowned = held.back().Disown();
  held.pop_back();
  ASSERT_TRUE(c().Release({disowned}).ok());
  // The first owner goes; the retained references keep the instance.
  made->Reset();
  warm->Reset();
  batch->clear();
  ASSERT_TRUE(c().Flush().ok());
  auto still = c().View<Counter>(ref);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->hits().load(), 5u);
  EXPECT_TRUE(CensusIsClean());
  // A stale or forged ref is refused with the daemon's error, and changes
  // nothing.
  held.clear();
  ASSERT_TRUE(c().Flush().ok());
  c().ReleaseSpares();
  EXPECT_EQ(c().Retain<Counter>(ref).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c().Retain<Counter>(Ref::Make(200, 0x9000, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(AwaitLive(admin, "c", 0), 0u);
  EXPECT_TRUE(CensusIsClean());
}

// Store, Store with copy and Clear exchange the field in shared memory
// (doc/lifecycle.md, "Store"): with the daemon stopped they go on; the
// previous values are released once it runs again, and the field's
// reference is an ordinary one.
TEST_F(ClientTest, StoreNeedsNoDaemonAndReleasesWhatTheFieldHeld) {
  auto holder = c().Allocate<Holder>();
  ASSERT_TRUE(holder.ok()) << holder.status();
  auto warm = c().Allocate<Counter>();
  ASSERT_TRUE(warm.ok());
  ASSERT_TRUE(c().Retain<Counter>(warm->ref()).ok());  // opens the session record (dropped)
  std::vector<Owned<Counter>> counters;
  for (int i = 0; i < 20; ++i) {
    auto one = c().Allocate<Counter>();
    ASSERT_TRUE(one.ok()) << one.status();
    (*one)->hits().store(100 + i);
    counters.push_back(std::move(*one));
  }
  const Ref kept = counters[0].ref();
  ASSERT_EQ(kill(daemon_.pid(), SIGSTOP), 0);
  for (int i = 1; i < 20; ++i) {
    auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(c().Store((*holder)->item(), std::move(counters[i])).ok()) << i;
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
    EXPECT_FALSE(counters[i]) << "moved into the field";
  }
  ASSERT_TRUE(c().Store((*holder)->item(), kept).ok());  // with copy: a retain
  EXPECT_EQ((*holder)->item().load(), kept);
  ASSERT_EQ(kill(daemon_.pid(), SIGCONT), 0);
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_TRUE(CensusIsClean());
  // The 19 moved in were released as the next replaced them; the field
  // holds a reference of its own to `kept`, which outlives its Owned.
  counters.clear();
  ASSERT_TRUE(c().Flush().ok());
  auto seen = c().View<Counter>(kept);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->hits().load(), 100u);
  ASSERT_TRUE(c().Clear((*holder)->item()).ok());
  EXPECT_TRUE((*holder)->item().load().is_null());
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_EQ(c().View<Counter>(kept).status().code(), absl::StatusCode::kNotFound)
      << "freed with the field's reference";
  warm->Reset();
  holder->Reset();
  ASSERT_TRUE(c().Flush().ok());
  c().ReleaseSpares();
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(AwaitLive(admin, "c", 0), 0u);
  EXPECT_TRUE(CensusIsClean());
}

// Several processes and threads retaining and dropping references to one
// instance at once: every count lands, and the instance lives exactly as
// long as someone holds it.
TEST_F(ClientTest, ProcessesAndThreadsRetainingOneInstanceAtOnceCountExactly) {
  auto made = c().Allocate<Counter>();
  ASSERT_TRUE(made.ok()) << made.status();
  (*made)->hits().store(777);
  ASSERT_TRUE(c().SetRoot("shared", made->ref()).ok());
  const Ref ref = made->ref();
  made->Reset();
  std::vector<std::unique_ptr<SpawnedProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(Worker("retain-churn", {"shared", "5000"}));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      std::vector<Owned<Counter>> mine;
      for (int i = 0; i < 5000; ++i) {
        auto one = c().Retain<Counter>(ref);
        if (!one.ok() || (*one)->hits().load() != 777) ++failures;
        if (one.ok()) mine.push_back(std::move(*one));
        if (mine.size() > 32) mine.erase(mine.begin() + i % 32);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (auto& w : workers) {
    EXPECT_EQ(w->ReadLine(std::chrono::seconds(120)), "done");
    EXPECT_EQ(w->Wait(), 0);
  }
  ASSERT_TRUE(c().Flush().ok());
  c().ReleaseSpares();
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(AwaitLive(admin, "c", 1), 1u) << "the root's instance alone";
  EXPECT_TRUE(CensusIsClean());
  ASSERT_TRUE(c().DeleteRoot("shared").ok());
  EXPECT_EQ(AwaitLive(admin, "c", 0), 0u) << "freed with its last reference";
}

TEST_F(ClientTest, AKilledProcessesOwnedRefsAreReleasedAndItsMutexReportsOwnerDied) {
  auto guarded = c().Allocate<Guarded>();
  ASSERT_TRUE(guarded.ok()) << guarded.status();
  ASSERT_TRUE(c().SetRoot("g", guarded->ref()).ok());
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  const uint64_t mine = 1 + c().SpareCount();  // with this process's stock
  ASSERT_EQ(admin.LiveInstances("c"), mine);
  auto holder = Worker("hold", {"50", "g"});
  ASSERT_EQ(holder->ReadLine(), "ready");
  EXPECT_GE(admin.LiveInstances("c"), mine + 50);  // its 50, and its stock
  holder->Kill(SIGKILL);
  EXPECT_EQ(holder->Wait(), 128 + SIGKILL);
  EXPECT_EQ(AwaitLive(admin, "c", mine), mine);
  EXPECT_EQ(c().arena().Resolve(guarded->ref())->header().refcount.load(), 2u);  // Owned + root
  auto guard = (*guarded)->lock().Lock();
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE(guard->owner_died());
}

// WaitChanged / Notify through the client library, across processes: the
// worker sleeps in WaitChanged on a field of an instance this process
// allocated, and wakes on this process's store and Notify.
TEST_F(ClientTest, AWaiterInAnotherProcessWakesOnStoreAndNotify) {
  auto counter = c().Allocate<Counter>();
  ASSERT_TRUE(counter.ok()) << counter.status();
  (*counter)->hits().store(11);
  ASSERT_TRUE(c().SetRoot("watched", counter->ref()).ok());
  auto waiter = Worker("await", {"watched", "11"});
  ASSERT_EQ(waiter->ReadLine(), "waiting");
  ASSERT_TRUE(testing::AwaitAsleep(waiter->pid(), waiter->pid()));
  // Asleep and the field unchanged: a notify wakes it, and it sleeps on.
  EXPECT_EQ((*counter)->hits().NotifyAll(), 1);
  ASSERT_TRUE(testing::AwaitAsleep(waiter->pid(), waiter->pid()));
  (*counter)->hits().store(12, std::memory_order_release);
  EXPECT_EQ((*counter)->hits().NotifyAll(), 1);
  EXPECT_EQ(waiter->ReadLine(), "changed 12");
  EXPECT_EQ(waiter->Wait(), 0);
  EXPECT_EQ((*counter)->hits().NotifyAll(), 0);
}

TEST_F(ClientTest, WhileTheDaemonIsGoneCallsFailFastAndMappedFieldsKeepWorking) {
  auto counter = c().Allocate<Counter>();
  ASSERT_TRUE(counter.ok()) << counter.status();
  daemon_.Kill9();
  for (int i = 0; i < 200 && me_->attached(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(me_->attached());
  // Allocate keeps serving from this process's stock (instances the
  // session already owns); once that is empty, it fails fast.
  const size_t spares = c().SpareCount();
  EXPECT_GT(spares, 0u);
  std::vector<Owned<Counter>> from_stock;
  for (size_t i = 0; i < spares; ++i) {
    auto one = c().Allocate<Counter>();
    ASSERT_TRUE(one.ok()) << i << ": " << one.status();
    EXPECT_EQ((*one)->hits().load(), 0u);
    from_stock.push_back(std::move(*one));
  }
  auto start = std::chrono::steady_clock::now();
  auto more = c().Allocate<Counter>();
  EXPECT_EQ(more.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  for (auto& o : from_stock) o.Disown();
  (*counter)->hits().fetch_add(5);
  EXPECT_EQ((*counter)->hits().load(), 5u);
  counter->Disown();  // nobody to release it to
}

// kill -9 of the daemon while clients work: mapped fields keep working,
// the restarted daemon re-adopts the channel, and clients re-attach,
// resuming their sessions (their Owned references stay owned).
TEST_F(ClientTest, ClientsWorkThroughADaemonRestartAndResumeTheirSessions) {
  auto counter = c().Allocate<Counter>();
  ASSERT_TRUE(counter.ok()) << counter.status();
  ASSERT_TRUE(c().SetRoot("n", counter->ref()).ok());
  auto nodes = c().AllocateBatch<Node>(10);
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  auto type = c().Use<Counter>();
  ASSERT_TRUE(type.ok());
  const std::string session = me_->session_id();
  auto witness = Worker("witness", {"n"});
  ASSERT_EQ(witness->ReadLine(), "ready");

  daemon_.Kill9();
  EXPECT_EQ(witness->ReadLine(), "detached");
  uint64_t during = (*counter)->hits().load();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_GT((*counter)->hits().load(), during);  // the worker keeps writing
  (*nodes)[0]->value().store(77);                // and so do we

  daemon_.Start();
  EXPECT_EQ(witness->ReadLine(), "reattached");
  EXPECT_EQ(witness->Wait(), 0);
  for (int i = 0; i < 500 && me_->reattach_count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(me_->reattach_count(), 1u);
  EXPECT_EQ(me_->session_id(), session);  // resumed, not a new session
  // Same type (token), same root, same instances, writable as before.
  auto again = c().Use<Counter>();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->token, type->token);
  auto root = c().GetRoot("n");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(*root, counter->ref());
  EXPECT_EQ((*nodes)[0]->value().load(), 77u);
  auto fresh = c().Allocate<Counter>();
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  // The resumed session still owns its references: releasing them works.
  std::vector<Ref> refs;
  for (auto& n : *nodes) refs.push_back(n.Disown());
  EXPECT_TRUE(c().Release(refs).ok());
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  // The counter and the new one, and this process's stock (kept through
  // the restart: the resumed ledger still lists it).
  EXPECT_EQ(admin.LiveInstances("c"), 2u + c().SpareCount());
}

// A client that dies while the daemon is down: the restarted daemon sees
// its process is gone and releases what it held.
TEST_F(ClientTest, ReferencesOfAClientThatDiedDuringTheOutageAreReleased) {
  auto guarded = c().Allocate<Guarded>();
  ASSERT_TRUE(guarded.ok()) << guarded.status();
  ASSERT_TRUE(c().SetRoot("g", guarded->ref()).ok());
  auto holder = Worker("hold", {"20", "g"});
  ASSERT_EQ(holder->ReadLine(), "ready");
  daemon_.Kill9();
  holder->Kill(SIGKILL);
  EXPECT_EQ(holder->Wait(), 128 + SIGKILL);
  daemon_.Start();
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  const uint64_t mine = 1 + c().SpareCount();
  EXPECT_EQ(AwaitLive(admin, "c", mine), mine);
  auto guard = (*guarded)->lock().Lock();
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE(guard->owner_died());
}

// Issue 13.4: a client stopped (SIGSTOP) for longer than the lease had its
// session ended and its blocks handed to other processes; resumed, it
// wrote through its old Owned into someone else's struct. Now a live
// process keeps its session however long it is silent.
TEST(ClientLeaseTest, AStoppedClientKeepsItsInstancesPastTheLease) {
  DaemonProcess daemon({"--lease-ms", "300"});
  auto me = ConnectTo(daemon);
  ASSERT_NE(me, nullptr);
  auto created = me->CreateChannel("c");
  ASSERT_TRUE(created.ok()) << created.status();
  Channel& c = *created->channel;
  auto worker = Worker(daemon, *created, "own");
  std::string line = worker->ReadLine();
  ASSERT_THAT(line, StartsWith("ref "));
  kill(worker->pid(), SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // 5 leases
  // Had the worker's block been freed, one of these would reuse it.
  std::vector<Owned<Counter>> ours;
  for (int i = 0; i < 50; ++i) {
    auto o = c.Allocate<Counter>();
    ASSERT_TRUE(o.ok()) << o.status();
    (*o)->hits().store(9999);
    EXPECT_NE(o->ref().ToString(), line.substr(4));
    ours.push_back(std::move(*o));
  }
  kill(worker->pid(), SIGCONT);
  auto go = c.Allocate<Counter>();
  ASSERT_TRUE(go.ok());
  ASSERT_TRUE(c.SetRoot("go", go->ref()).ok());
  EXPECT_EQ(worker->ReadLine(), "value 1234 status OK");
  EXPECT_EQ(worker->Wait(), 0);
}

// The other half of 13.4: a client whose session really was ended while it
// lived learns it, instead of re-attaching silently with a new session
// while its old Owned objects name freed memory. Here the daemon restarts
// and cannot resume the session (its record is gone).
TEST(ClientLeaseTest, AClientWhoseSessionWasEndedIsToldAndStops) {
  DaemonProcess daemon;
  auto me = ConnectTo(daemon);
  ASSERT_NE(me, nullptr);
  auto created = me->CreateChannel("c");
  ASSERT_TRUE(created.ok()) << created.status();
  auto worker = Worker(daemon, *created, "lost");
  std::string line = worker->ReadLine();
  ASSERT_THAT(line, StartsWith("ready "));
  std::string session = line.substr(6);
  daemon.Kill9();
  ASSERT_TRUE(std::filesystem::remove(daemon.state_dir() + "/sessions/" + session));
  daemon.Start();
  line = worker->ReadLine();
  EXPECT_THAT(line, StartsWith("lost structd: session " + session.substr(0, 8)));
  EXPECT_THAT(line, HasSubstr("connect a new Client"));
  EXPECT_EQ(worker->ReadLine(), "call FAILED_PRECONDITION");
  EXPECT_EQ(worker->Wait(), 0);
}

// Issue 18: Port<T> in the client library. Messages move as Owneds; a
// receiver blocked on an empty port sleeps on its publish counter and a
// send wakes it (a lost wake-up would leave it asleep for its 10 s).
TEST_F(ClientTest, APortMovesOwnedsAndWakesABlockedReceiver) {
  ASSERT_TRUE(c().CreatePort("jobs", 4).ok());
  auto port = c().OpenPort<Counter>("jobs");
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(c().OpenPort<Counter>("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(port->TryReceive().status().code(), absl::StatusCode::kNotFound);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(port->Receive(std::chrono::milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(50));

  std::atomic<uint64_t> got{0};
  std::chrono::steady_clock::duration blocked{};
  std::thread receiver([&] {
    auto t0 = std::chrono::steady_clock::now();
    auto message = port->Receive(std::chrono::seconds(10));
    blocked = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(message.ok()) << message.status();
    got.store((*message)->hits().load());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto job = c().Allocate<Counter>();
  ASSERT_TRUE(job.ok());
  (*job)->hits().store(7);
  ASSERT_TRUE(port->Send(*job).ok());
  EXPECT_FALSE(*job) << "a sent Owned is empty";
  receiver.join();
  EXPECT_EQ(got.load(), 7u);
  EXPECT_GE(blocked, std::chrono::milliseconds(90)) << "the receiver did not wait";
  EXPECT_LT(blocked, std::chrono::seconds(5)) << "the send did not wake the receiver";

  // Full: the message stays the sender's.
  for (int i = 0; i < 4; ++i) {
    auto m = c().Allocate<Counter>();
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(port->Send(std::move(*m)).ok()) << i;
  }
  auto extra = c().Allocate<Counter>();
  ASSERT_TRUE(extra.ok());
  (*extra)->hits().store(99);
  EXPECT_EQ(port->Send(*extra).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(*extra);
  EXPECT_EQ((*extra)->hits().load(), 99u);
  auto info = port->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->depth, 4u);
  EXPECT_EQ(info->sent, 5u);  // the job and four

  // A send with a timeout waits for room: a receive makes it.
  std::thread taker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(port->TryReceive().ok());
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(port->Send(*extra, std::chrono::seconds(10)).ok());
  const auto waited_for_room = std::chrono::steady_clock::now() - t0;
  taker.join();
  EXPECT_FALSE(*extra);
  EXPECT_GE(waited_for_room, std::chrono::milliseconds(90)) << "the send did not wait";
  EXPECT_LT(waited_for_room, std::chrono::seconds(5)) << "the receive did not wake the sender";
  auto late = c().Allocate<Counter>();
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(port->Send(*late, std::chrono::milliseconds(30)).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(*late);

  // The event-loop hook: a FieldWatch's descriptor becomes readable when a
  // message arrives (poll here stands for epoll).
  {
    auto drained = port->TryReceive();  // make room
    ASSERT_TRUE(drained.ok());
    auto watch = shm::FieldWatch::Create();
    ASSERT_TRUE(watch.ok());
    auto arrivals = port->WatchArrivals();
    ASSERT_TRUE(arrivals.ok()) << arrivals.status();
    ASSERT_TRUE(arrivals->Arm(**watch).ok());
    pollfd pfd{(*watch)->fd(), POLLIN, 0};
    EXPECT_EQ(poll(&pfd, 1, 50), 0) << "readable before any message";
    std::thread sender([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      auto m = c().Allocate<Counter>();
      ASSERT_TRUE(m.ok());
      EXPECT_TRUE(port->Send(*m).ok());
    });
    EXPECT_EQ(poll(&pfd, 1, 5000), 1) << "the send did not make the descriptor readable";
    sender.join();
    EXPECT_EQ((*watch)->TakeFired().size(), 1u);
  }
  EXPECT_EQ(port->Info()->receivers_waiting, 0u) << "the watcher uncounted itself";

  // A receiver of another type gets an error; the message is released.
  auto wrong = c().OpenPort<Vector>("jobs");
  ASSERT_TRUE(wrong.ok());
  auto mistyped = wrong->TryReceive();
  EXPECT_EQ(mistyped.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(mistyped.status().message(), ::testing::HasSubstr("is not a 'Vector'"));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(port->TryReceive().ok()) << i;
  EXPECT_EQ(port->TryReceive().status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_TRUE(CensusIsClean());
}

// Issue 18: senders and receivers in processes of their own, through a
// port small enough that senders wait for room and receivers for
// messages; the moves are the client library's (slots of each session's
// record). Every message is received exactly once (count, sum and sum of
// squares of distinct values), and once the processes are gone nothing is
// left over.
TEST_F(ClientTest, ManySenderAndReceiverProcessesGetEveryMessageThroughAPortExactlyOnce) {
  constexpr uint64_t kSenders = 3, kReceivers = 2, kPerSender = 4000;
  ASSERT_TRUE(c().CreatePort("q", 8).ok());
  std::vector<std::unique_ptr<SpawnedProcess>> senders, receivers;
  uint64_t want_sum = 0, want_sumsq = 0;
  for (uint64_t s = 0; s < kSenders; ++s) {
    const uint64_t first = 1 + s * kPerSender;
    for (uint64_t v = first; v < first + kPerSender; ++v) {
      want_sum += v;
      want_sumsq += v * v;
    }
    senders.push_back(
        Worker("port-send", {"q", std::to_string(kPerSender), std::to_string(first)}));
  }
  for (uint64_t r = 0; r < kReceivers; ++r) receivers.push_back(Worker("port-receive", {"q"}));
  for (auto& w : senders) {
    EXPECT_EQ(w->ReadLine(std::chrono::seconds(120)), "done");
    EXPECT_EQ(w->Wait(), 0);
  }
  auto q = c().OpenPort<Counter>("q");
  ASSERT_TRUE(q.ok()) << q.status();
  for (uint64_t r = 0; r < kReceivers; ++r) {
    auto stop = c().Allocate<Counter>();  // hits 0
    ASSERT_TRUE(stop.ok());
    ASSERT_TRUE(q->Send(*stop, std::chrono::seconds(30)).ok());
  }
  uint64_t count = 0, sum = 0, sumsq = 0;
  for (auto& w : receivers) {
    const std::string line = w->ReadLine(std::chrono::seconds(120));
    unsigned long long n = 0, s = 0, sq = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "received %llu %llu %llu", &n, &s, &sq), 3) << line;
    EXPECT_GT(n, 0u) << "a receiver got nothing: the port did not spread the work";
    count += n;
    sum += s;
    sumsq += sq;
    EXPECT_EQ(w->Wait(), 0);
  }
  EXPECT_EQ(count, kSenders * kPerSender) << "messages lost or received twice";
  EXPECT_EQ(sum, want_sum);
  EXPECT_EQ(sumsq, want_sumsq);
  EXPECT_EQ(q->Info()->depth, 0u);
  ASSERT_TRUE(c().Flush().ok());
  c().ReleaseSpares();
  GrpcClient admin(daemon_.target(), /*attach=*/false);
  EXPECT_EQ(AwaitLive(admin, "c", 1), 1u) << "more than the port is left (sessions' leftovers)";
  EXPECT_TRUE(CensusIsClean());
}

TEST_F(ClientTest, ReceivedMessagesMoveOnThroughPortsWhileTheDaemonIsStopped) {
  // A message received is held in a slot of the session's record and sent
  // on from there in shared memory: with the daemon stopped (SIGSTOP),
  // two sessions hand messages back and forth, and nothing waits on it.
  std::unique_ptr<Client> other = ConnectTo(daemon_);
  ASSERT_NE(other, nullptr);
  auto theirs = other->Join("c", created_.member_capability);
  ASSERT_TRUE(theirs.ok()) << theirs.status();
  ASSERT_TRUE(c().CreatePort("ping", 8).ok());
  ASSERT_TRUE(c().CreatePort("pong", 8).ok());
  auto ping = c().OpenPort<Counter>("ping");
  auto pong = c().OpenPort<Counter>("pong");
  auto ping_there = (*theirs)->OpenPort<Counter>("ping");
  auto pong_there = (*theirs)->OpenPort<Counter>("pong");
  ASSERT_TRUE(ping.ok() && pong.ok() && ping_there.ok() && pong_there.ok());
  constexpr int kMessages = 4;
  for (int i = 0; i < kMessages; ++i) {
    auto m = c().Allocate<Counter>();
    ASSERT_TRUE(m.ok());
    (*m)->hits().store(100 + i);
    ASSERT_TRUE(ping->Send(*m).ok());  // allocated: held in the ledger, sent by a call
  }
  // Into the other session's slots (the record is opened here, by a call).
  std::vector<Owned<Counter>> held;
  for (int i = 0; i < kMessages; ++i) {
    auto m = ping_there->Receive(std::chrono::seconds(5));
    ASSERT_TRUE(m.ok()) << m.status();
    held.push_back(std::move(*m));
  }
  ASSERT_TRUE(pong->TryReceive().status().code() == absl::StatusCode::kNotFound);
  // The stock refilled into the record's slots (one call, before the stop).
  c().ReleaseSpares();
  ASSERT_TRUE(c().AllocateBatch<Counter>(1).ok());
  ASSERT_GE(c().SpareCount(), static_cast<size_t>(kMessages));
  ASSERT_EQ(kill(daemon_.pid(), SIGSTOP), 0);
  struct Continue {
    pid_t pid;
    ~Continue() { kill(pid, SIGCONT); }  // also when an assertion returns early
  } resume{daemon_.pid()};
  uint64_t sum = 0;
  for (int round = 0; round < 50; ++round) {
    for (auto& m : held) ASSERT_TRUE(pong_there->Send(m, std::chrono::seconds(2)).ok());
    held.clear();
    for (int i = 0; i < kMessages; ++i) {
      auto back = pong->Receive(std::chrono::seconds(2));
      ASSERT_TRUE(back.ok()) << back.status();
      (*back)->hits().fetch_add(1);
      ASSERT_TRUE(ping->Send(*back, std::chrono::seconds(2)).ok()) << "round " << round;
      EXPECT_FALSE(*back);
    }
    for (int i = 0; i < kMessages; ++i) {
      auto m = ping_there->Receive(std::chrono::seconds(2));
      ASSERT_TRUE(m.ok()) << m.status();
      if (round == 49) sum += (*m)->hits().load();
      held.push_back(std::move(*m));
    }
  }
  // A producer's allocations, once it has opened a port, are held in its
  // record's slots too: allocated (from the stock) and sent with the
  // daemon still stopped.
  std::vector<Owned<Counter>> fresh;
  for (int i = 0; i < kMessages; ++i) {
    auto m = c().Allocate<Counter>();
    ASSERT_TRUE(m.ok()) << m.status();
    fresh.push_back(std::move(*m));
  }
  for (auto& m : fresh) {
    m->hits().store(7);
    ASSERT_TRUE(pong->Send(m, std::chrono::seconds(2)).ok());
  }
  for (int i = 0; i < kMessages; ++i) {
    auto m = pong_there->Receive(std::chrono::seconds(2));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->hits().load(), 7u);
  }
  ASSERT_EQ(kill(daemon_.pid(), SIGCONT), 0);
  EXPECT_EQ(sum, 100u + 101 + 102 + 103 + kMessages * 50);
  // Dropped from the slots: released through the daemon, and nothing is
  // left over.
  held.clear();
  ASSERT_TRUE((*theirs)->Flush().ok());
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_TRUE(CensusIsClean());
  auto info = ping->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->depth, 0u);
  EXPECT_EQ(info->sent, kMessages * 51u);
  // Allocated and dropped at once: recycled in place, its slot kept.
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(c().Allocate<Counter>().ok());
  ASSERT_TRUE(c().Flush().ok());
  EXPECT_TRUE(CensusIsClean());
}

}  // namespace
}  // namespace structd::testing
