// structd_test_client: a client-library process for the client tests.
//
//   structd_test_client MODE SOCKET CHANNEL CAPABILITY [ARGS...]
//
//   count ROOT N        adds 1 to Counter ROOT's hits N times; prints "done"
//   behavior ROOT KIND  binds VectorMethods (KIND print|norm) to Vector and
//                       prints "result " + describe(ROOT)
//   unbound ROOT        calls describe on ROOT without binding; prints the error
//   mismatch            uses Vector3 (same key, other layout); prints the error
//   sum ROOT            walks the Node list from ROOT; prints "sum S count C"
//   hold N ROOT         owns N new Nodes, locks Guarded ROOT's mutex,
//                       prints "ready" and waits to be killed
//   chaos SEED          random allocate/retain/release/store/lock/write/root
//                       operations on Nodes and the Anchors rooted as
//                       a0..a3, forever (prints "ready"); to be killed.
//                       Meanwhile a second session of the process (raw
//                       gRPC, as a client in another language) allocates
//                       Nodes and sends, receives and releases them
//                       through port "q", if the channel has it
//   load N              N rounds of mixed RPCs (allocate, retain, release,
//                       store, roots, describe) and field writes, adding 1 to
//                       Counter "total" per round; any failed call prints
//                       "error ..." and exits 4; else prints "done"
//   churn N             N Allocate<Counter>() one by one, each stamped and
//                       dropped at random, checked intact when dropped;
//                       prints "done"
//   retain-churn ROOT N retains the Counter at root ROOT N times, keeping up
//                       to 64 of those references and dropping them at
//                       random (some through a clone), each checked to
//                       still show the hits it had at start; prints "done"
//   witness ROOT        adds to Counter ROOT's hits all along; prints "ready",
//                       then "detached" when the daemon is gone and
//                       "reattached" once calls work again (exit 0), or
//                       exits 5 after 30 s
//   own                 owns a new Counter with hits = 1234, prints
//                       "ref REF", waits until root "go" exists, then
//                       prints "value HITS status CODE" (CODE: the
//                       session status's code name)
//   lost                prints "ready SESSION", waits until the client
//                       reports its session lost, then prints "lost MSG"
//                       and "call CODE" for one Allocate (or exits 5
//                       after 30 s)
//   await ROOT SEEN     prints "waiting", waits (30 s at most) until Counter
//                       ROOT's hits is no longer SEEN, prints "changed V"
//   port-send PORT N FIRST  allocates N Counters with hits FIRST..FIRST+N-1
//                       and sends each to Port<Counter> PORT (waiting up to
//                       30 s for room); prints "done"
//   port-receive PORT   receives from PORT until a message with hits 0,
//                       dropping each; prints "received COUNT SUM SUMSQ"
//                       (of the hits, mod 2^64)
//
// Exit codes: 0 ok, 2 usage, 3 connect/join failed, 4 a call failed.
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <exception>
#include <memory>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <thread>
#include <vector>
#include <string>

#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/client/port.h"
#include "structd/shm/local_retain.h"
#include "structd/shm/local_store.h"
#include "structd/v1/instances.grpc.pb.h"
#include "testing/client_types.h"
#include "testing/grpc_client.h"

using structd::client::Channel;
using structd::client::Client;
using structd::client::Owned;
using namespace structd::testing;

namespace {

int Fail(const absl::Status& s) {
  std::printf("error %s\n", s.ToString().c_str());
  std::fflush(stdout);
  return 4;
}

// The chaos mode's port traffic, in a session of its own through the raw
// gRPC calls: allocate, send, receive, release, at random, forever. Every
// failure is ignored (the daemon may be away); the process is killed.
[[noreturn]] void PortChaos(const std::string& socket, const std::string& channel,
                            const std::string& capability, const std::string& node_token,
                            uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::unique_ptr<GrpcClient> attached;
  try {
    attached = std::make_unique<GrpcClient>("unix:" + socket);
  } catch (const std::exception&) {
    while (true) pause();  // no daemon to talk to: the rest of chaos goes on
  }
  GrpcClient& raw = *attached;
  (void)raw.Join(channel, capability);
  std::vector<uint64_t> mine;
  while (true) {
    switch (rng() % 4) {
      case 0: {
        structd::v1::AllocateBatchRequest req;
        req.set_channel(channel);
        req.set_token(node_token);
        req.set_count(1 + rng() % 8);
        structd::v1::AllocateBatchResponse resp;
        if (raw.instances().AllocateBatch(raw.Ctx().get(), req, &resp).ok()) {
          mine.insert(mine.end(), resp.refs().begin(), resp.refs().end());
        }
        break;
      }
      case 1: {
        if (mine.empty()) break;
        structd::v1::SendToPortRequest req;
        req.set_channel(channel);
        req.set_name("q");
        const size_t n = 1 + rng() % mine.size();
        for (size_t i = 0; i < n; ++i) req.add_refs(mine[i]);
        structd::v1::SendToPortResponse resp;
        if (raw.instances().SendToPort(raw.Ctx().get(), req, &resp).ok()) {
          mine.erase(mine.begin(), mine.begin() + resp.sent());
        }
        break;
      }
      case 2: {
        structd::v1::ReceiveFromPortRequest req;
        req.set_channel(channel);
        req.set_name("q");
        req.set_max(1 + rng() % 8);
        structd::v1::ReceiveFromPortResponse resp;
        if (raw.instances().ReceiveFromPort(raw.Ctx().get(), req, &resp).ok()) {
          mine.insert(mine.end(), resp.refs().begin(), resp.refs().end());
        }
        break;
      }
      default: {
        if (mine.empty()) break;
        structd::v1::ReleaseRequest req;
        req.set_channel(channel);
        req.add_refs(mine.back());
        structd::v1::ReleaseResponse resp;
        (void)raw.instances().Release(raw.Ctx().get(), req, &resp);
        mine.pop_back();
        break;
      }
    }
    if (mine.size() > 64) mine.resize(32);  // kept by the session's ledger
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODE SOCKET CHANNEL CAPABILITY [ARGS...]\n", argv[0]);
    return 2;
  }
  std::string mode = argv[1];
  structd::client::ClientOptions options;
  options.socket = argv[2];
  options.name = "test-" + mode;
  auto client = Client::Connect(options);
  if (!client.ok()) {
    std::printf("error %s\n", client.status().ToString().c_str());
    return 3;
  }
  auto ch = (*client)->Join(argv[3], argv[4]);
  if (!ch.ok()) {
    std::printf("error %s\n", ch.status().ToString().c_str());
    return 3;
  }
  Channel& c = **ch;
  auto root = [&](const char* name) { return c.GetRoot(name); };

  if (mode == "count" && argc == 7) {
    auto ref = root(argv[5]);
    if (!ref.ok()) return Fail(ref.status());
    auto counter = c.View<Counter>(*ref);
    if (!counter.ok()) return Fail(counter.status());
    long n = std::atol(argv[6]);
    for (long i = 0; i < n; ++i) counter->hits().fetch_add(1);
    std::printf("done\n");
    return 0;
  }
  if ((mode == "behavior" && argc == 7) || (mode == "unbound" && argc == 6)) {
    auto ref = root(argv[5]);
    if (!ref.ok()) return Fail(ref.status());
    auto v = c.View<Vector>(*ref);
    if (!v.ok()) return Fail(v.status());
    if (mode == "behavior") {
      VectorMethods methods;
      if (std::string(argv[6]) == "print") {
        methods.describe = [](const Vector& v) {
          return "Vector(" + std::to_string(static_cast<int>(v.x().load())) + ", " +
                 std::to_string(static_cast<int>(v.y().load())) + ")";
        };
      } else {
        methods.describe = [](const Vector& v) {
          return std::to_string(
              static_cast<int>(std::hypot(v.x().load(), v.y().load())));
        };
      }
      if (auto s = c.Bind<Vector>(methods); !s.ok()) return Fail(s);
    }
    auto result = c.Call(*v, &VectorMethods::describe);
    if (!result.ok()) return Fail(result.status());
    std::printf("result %s\n", result->c_str());
    return 0;
  }
  if (mode == "mismatch") {
    auto type = c.Use<Vector3>();
    if (type.ok()) {
      std::printf("unexpectedly bound\n");
      return 0;
    }
    return Fail(type.status());
  }
  if (mode == "sum" && argc == 6) {
    auto ref = root(argv[5]);
    if (!ref.ok()) return Fail(ref.status());
    uint64_t sum = 0, count = 0;
    structd::client::Ref at = *ref;
    while (!at.is_null()) {
      auto node = c.View<Node>(at);
      if (!node.ok()) return Fail(node.status());
      sum += node->value().load();
      ++count;
      at = node->next().load();
    }
    std::printf("sum %llu count %llu\n", static_cast<unsigned long long>(sum),
                static_cast<unsigned long long>(count));
    return 0;
  }
  if (mode == "hold" && argc == 7) {
    auto owned = c.AllocateBatch<Node>(static_cast<uint32_t>(std::atoi(argv[5])));
    if (!owned.ok()) return Fail(owned.status());
    auto ref = root(argv[6]);
    if (!ref.ok()) return Fail(ref.status());
    auto guarded = c.View<Guarded>(*ref);
    if (!guarded.ok()) return Fail(guarded.status());
    auto guard = guarded->lock().Lock();
    if (!guard.ok()) return Fail(guard.status());
    std::printf("ready\n");
    std::fflush(stdout);
    while (true) pause();
  }
  if (mode == "chaos" && argc == 6) {
    std::mt19937_64 rng(std::strtoull(argv[5], nullptr, 10));
    std::vector<Anchor> anchors;
    for (int i = 0; i < 4; ++i) {
      auto ref = root(("a" + std::to_string(i)).c_str());
      if (!ref.ok()) return Fail(ref.status());
      auto a = c.View<Anchor>(*ref);
      if (!a.ok()) return Fail(a.status());
      anchors.push_back(*a);
    }
    std::vector<Owned<Node>> mine;
    std::string my_root = "w" + std::to_string(getpid());
    // Port "q" (when the test made it): a thread of raw calls, and this
    // loop's own sends and receives through Port<Node>, in shared memory
    // for what it received (held in its record's slots).
    std::optional<structd::client::Port<Node>> q;
    if (auto ports = c.ListPorts(); ports.ok() && !ports->empty()) {
      auto node = c.Use<Node>();
      if (!node.ok()) return Fail(node.status());
      std::thread(PortChaos, std::string(argv[2]), std::string(argv[3]), std::string(argv[4]),
                  node->token.ToHex(), rng())
          .detach();
      auto opened = c.OpenPort<Node>("q");
      if (opened.ok()) q.emplace(std::move(*opened));
    }
    std::printf("ready\n");
    std::fflush(stdout);
    auto pick = [&] { return rng() % mine.size(); };
    while (true) {
      Anchor& anchor = anchors[rng() % anchors.size()];
      if (q && rng() % 10 == 0) {
        for (int n = 1 + static_cast<int>(rng() % 4); n > 0; --n) {
          auto got = q->TryReceive();
          if (got.ok()) mine.push_back(std::move(*got));
        }
        for (int n = static_cast<int>(rng() % 4); n > 0 && !mine.empty(); --n) {
          const size_t i = pick();
          if (q->Send(mine[i]).ok()) mine.erase(mine.begin() + static_cast<long>(i));
        }
        continue;
      }
      switch (rng() % 9) {
        case 0: {
          if (rng() % 2 == 0) {  // from the stock, one by one
            for (int n = 1 + static_cast<int>(rng() % 16); n > 0; --n) {
              auto one = c.Allocate<Node>();
              if (one.ok()) mine.push_back(std::move(*one));
            }
          } else {
            auto made = c.AllocateBatch<Node>(1 + rng() % 16);
            if (made.ok()) for (auto& n : *made) mine.push_back(std::move(n));
          }
          break;
        }
        case 1:
          if (!mine.empty()) mine.erase(mine.begin() + static_cast<long>(pick()));
          // And Counters allocated and dropped at once: recycled in place,
          // some after a clone (the last of the two out recycles), some
          // with a clone disowned and released (a queued retain).
          for (int n = static_cast<int>(rng() % 8); n > 0; --n) {
            auto counter = c.Allocate<Counter>();
            if (!counter.ok()) continue;
            (*counter)->hits().store(rng());
            if (rng() % 2 == 0) continue;
            auto twin = counter->Clone();
            if (!twin.ok()) continue;
            if (rng() % 2 == 0) {
              counter->Reset();
            } else {
              (void)c.Release(std::vector<structd::client::Ref>{twin->Disown()});
            }
          }
          break;
        case 2:
          if (rng() % 2 == 0) {
            // A reference of its own to what another process stored (a
            // retain in shared memory; stale refs are refused).
            const structd::client::Ref seen = anchor.next().load();
            if (!seen.is_null() && rng() % 200 == 0) {
              // Killed inside the retain, right after raising the count or
              // after filling the slot (shm/local_retain.h).
              structd::shm::internal::StopRetainAfterStepForTesting(rng() % 2 == 0 ? 2 : 4);
              (void)c.Retain<Node>(seen);
              raise(SIGKILL);
            }
            if (!seen.is_null()) {
              auto taken = c.Retain<Node>(seen);
              if (taken.ok()) mine.push_back(std::move(*taken));
            }
          } else if (!mine.empty()) {
            auto copy = mine[pick()].Clone();
            if (copy.ok()) mine.push_back(std::move(*copy));
          }
          break;
        case 3:
          if (mine.size() >= 2) {
            const size_t holder = pick();
            const size_t value = pick();
            if (rng() % 200 == 0) {
              // Killed inside the store, after the guard, the field's
              // swap or the slot's (shm/local_store.h).
              structd::shm::internal::StopStoreAfterStepForTesting(2 + static_cast<int>(rng() % 3));
              (void)c.Store(mine[holder]->next(), mine[value].ref());
              raise(SIGKILL);
            }
            if (rng() % 2 == 0 && holder != value) {
              // With move: the Owned's reference goes into the field.
              if (c.Store(mine[holder]->next(), std::move(mine[value])).ok()) {
                mine.erase(mine.begin() + static_cast<long>(value));
              }
            } else {
              (void)c.Store(mine[holder]->next(), mine[value].ref());
            }
          }
          break;
        case 4: {
          auto guard = anchor.lock().Lock();
          if (guard.ok()) {
            anchor.hits().fetch_add(1);
            (void)anchor.text().Write("locked by " + std::to_string(getpid()));
          }
          break;
        }
        case 5:
          (void)anchor.text().Write(std::string(rng() % 33, 'a' + static_cast<char>(rng() % 26)));
          break;
        case 6:
          if (!mine.empty()) (void)c.SetRoot(my_root, mine[pick()].ref());
          break;
        case 7:
          (void)c.DeleteRoot(my_root);
          break;
        default:
          if (!mine.empty()) (void)c.Store(anchor.next(), mine[pick()].ref());
          break;
      }
      if (mine.size() > 200) mine.resize(100);
    }
  }
  if (mode == "load" && argc == 6) {
    long rounds = std::atol(argv[5]);
    auto total_ref = root("total");
    if (!total_ref.ok()) return Fail(total_ref.status());
    auto total = c.View<Counter>(*total_ref);
    if (!total.ok()) return Fail(total.status());
    std::string my_root = "load" + std::to_string(getpid());
    std::mt19937_64 rng(static_cast<uint64_t>(getpid()));
    std::vector<Owned<Node>> mine;
    for (long i = 0; i < rounds; ++i) {
      auto made = c.AllocateBatch<Node>(1 + rng() % 4);
      if (!made.ok()) return Fail(made.status());
      for (auto& n : *made) {
        n->value().store(i);
        mine.push_back(std::move(n));
      }
      // A newer node points to an older one: no cycles (refcounting does
      // not collect them), so everything goes when the client does.
      size_t older = rng() % mine.size();
      size_t newer = older + rng() % (mine.size() - older);
      auto copy = mine[older].Clone();
      if (!copy.ok()) return Fail(copy.status());
      if (newer != older) {
        if (auto s = c.Store(mine[newer]->next(), copy->ref()); !s.ok()) return Fail(s);
      }
      if (auto s = c.SetRoot(my_root, copy->ref()); !s.ok()) return Fail(s);
      auto back = c.GetRoot(my_root);
      if (!back.ok() || *back != copy->ref()) return Fail(back.status());
      auto type = c.Use<Node>();
      if (!type.ok()) return Fail(type.status());
      if (auto d = c.DescribeType(type->token); !d.ok()) return Fail(d.status());
      total->hits().fetch_add(1);  // the field write whose total is checked
      if (mine.size() > 16) {
        std::vector<Owned<Node>> old(std::make_move_iterator(mine.begin()),
                                     std::make_move_iterator(mine.begin() + 8));
        mine.erase(mine.begin(), mine.begin() + 8);
        if (auto s = c.Release(old); !s.ok()) return Fail(s);
      }
    }
    if (auto s = c.DeleteRoot(my_root); !s.ok()) return Fail(s);
    if (auto s = c.Release(mine); !s.ok()) return Fail(s);
    std::printf("done\n");
    return 0;
  }
  if (mode == "churn" && argc == 6) {
    // Allocate and drop Nodes one by one, each stamped with a value of its
    // own that must still be there when it is dropped.
    long rounds = std::atol(argv[5]);
    std::mt19937_64 rng(static_cast<uint64_t>(getpid()));
    std::vector<std::pair<Owned<Counter>, uint64_t>> mine;
    uint64_t stamp = static_cast<uint64_t>(getpid()) << 32;
    for (long i = 0; i < rounds; ++i) {
      auto one = c.Allocate<Counter>();
      if (!one.ok()) return Fail(one.status());
      if ((*one)->hits().load() != 0) return Fail(absl::DataLossError("not zero-filled"));
      (*one)->hits().store(++stamp);
      mine.emplace_back(std::move(*one), stamp);
      if (mine.size() > 64 || rng() % 3 == 0) {
        size_t k = rng() % mine.size();
        if (mine[k].first->hits().load() != mine[k].second) {
          return Fail(absl::DataLossError("an owned instance changed under its owner"));
        }
        mine.erase(mine.begin() + static_cast<long>(k));
      }
    }
    mine.clear();
    if (auto s = c.Flush(); !s.ok()) return Fail(s);
    std::printf("done\n");
    return 0;
  }
  if (mode == "retain-churn" && argc == 7) {
    auto ref = root(argv[5]);
    if (!ref.ok()) return Fail(ref.status());
    const long rounds = std::atol(argv[6]);
    std::mt19937_64 rng(static_cast<uint64_t>(getpid()));
    auto first = c.Retain<Counter>(*ref);
    if (!first.ok()) return Fail(first.status());
    const uint64_t hits = (*first)->hits().load();
    std::vector<Owned<Counter>> mine;
    mine.push_back(std::move(*first));
    for (long i = 0; i < rounds; ++i) {
      auto one = c.Retain<Counter>(*ref);
      if (!one.ok()) return Fail(one.status());
      if (rng() % 4 == 0) {
        auto twin = one->Clone();
        if (!twin.ok()) return Fail(twin.status());
        mine.push_back(std::move(*twin));
      }
      mine.push_back(std::move(*one));
      while (mine.size() > 64 || (!mine.empty() && rng() % 2 == 0)) {
        const size_t k = rng() % mine.size();
        if (mine[k]->hits().load() != hits) {
          return Fail(absl::DataLossError("a retained instance changed under its owner"));
        }
        mine.erase(mine.begin() + static_cast<long>(k));
      }
    }
    mine.clear();
    if (auto s = c.Flush(); !s.ok()) return Fail(s);
    std::printf("done\n");
    return 0;
  }
  if (mode == "witness" && argc == 6) {
    auto ref = root(argv[5]);
    if (!ref.ok()) return Fail(ref.status());
    auto counter = c.View<Counter>(*ref);
    if (!counter.ok()) return Fail(counter.status());
    std::printf("ready\n");
    std::fflush(stdout);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool detached = false;
    while (std::chrono::steady_clock::now() < deadline) {
      counter->hits().fetch_add(1);  // works whether or not the daemon is up
      if (!detached && !(*client)->attached()) {
        detached = true;
        std::printf("detached\n");
        std::fflush(stdout);
      }
      if (detached && (*client)->attached() && c.GetRoot(argv[5]).ok()) {
        std::printf("reattached\n");
        return 0;
      }
      usleep(200);
    }
    return 5;
  }
  if (mode == "await" && argc == 7) {
    auto ref = root(argv[5]);
    if (!ref.ok()) return Fail(ref.status());
    auto counter = c.View<Counter>(*ref);
    if (!counter.ok()) return Fail(counter.status());
    std::printf("waiting\n");
    std::fflush(stdout);
    auto now = counter->hits().WaitChanged(std::strtoull(argv[6], nullptr, 10),
                                           std::chrono::seconds(30));
    if (!now.ok()) return Fail(now.status());
    std::printf("changed %llu\n", static_cast<unsigned long long>(*now));
    return 0;
  }
  if (mode == "own" && argc == 5) {
    auto mine = c.Allocate<Counter>();
    if (!mine.ok()) return Fail(mine.status());
    (*mine)->hits().store(1234);
    std::printf("ref %s\n", mine->ref().ToString().c_str());
    std::fflush(stdout);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!c.GetRoot("go").ok()) {
      if (std::chrono::steady_clock::now() > deadline) return 5;
      usleep(20000);
    }
    std::printf("value %llu status %s\n",
                static_cast<unsigned long long>((*mine)->hits().load()),
                absl::StatusCodeToString((*client)->session_status().code()).c_str());
    return 0;
  }
  if (mode == "lost" && argc == 5) {
    auto mine = c.Allocate<Counter>();
    if (!mine.ok()) return Fail(mine.status());
    std::printf("ready %s\n", (*client)->session_id().c_str());
    std::fflush(stdout);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while ((*client)->session_status().ok()) {
      if (std::chrono::steady_clock::now() > deadline) return 5;
      usleep(10000);
    }
    std::printf("lost %s\n", std::string((*client)->session_status().message()).c_str());
    auto more = c.Allocate<Counter>();
    std::printf("call %s\n", absl::StatusCodeToString(more.status().code()).c_str());
    mine->Disown();
    return 0;
  }
  if (mode == "port-send" && argc == 8) {
    auto port = c.OpenPort<Counter>(argv[5]);
    if (!port.ok()) return Fail(port.status());
    const uint64_t n = std::strtoull(argv[6], nullptr, 10);
    const uint64_t first = std::strtoull(argv[7], nullptr, 10);
    for (uint64_t i = 0; i < n; ++i) {
      auto m = c.Allocate<Counter>();
      if (!m.ok()) return Fail(m.status());
      (*m)->hits().store(first + i);
      if (absl::Status s = port->Send(*m, std::chrono::seconds(30)); !s.ok()) return Fail(s);
    }
    std::printf("done\n");
    return 0;
  }
  if (mode == "port-receive" && argc == 6) {
    auto port = c.OpenPort<Counter>(argv[5]);
    if (!port.ok()) return Fail(port.status());
    uint64_t count = 0, sum = 0, sumsq = 0;
    for (;;) {
      auto m = port->Receive(std::chrono::seconds(30));
      if (!m.ok()) return Fail(m.status());
      const uint64_t hits = (*m)->hits().load();
      if (hits == 0) break;
      ++count;
      sum += hits;
      sumsq += hits * hits;
    }
    if (absl::Status s = c.Flush(); !s.ok()) return Fail(s);
    std::printf("received %llu %llu %llu\n", static_cast<unsigned long long>(count),
                static_cast<unsigned long long>(sum), static_cast<unsigned long long>(sumsq));
    return 0;
  }
  std::fprintf(stderr, "unknown mode or wrong arguments: %s\n", mode.c_str());
  return 2;
}
