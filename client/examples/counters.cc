// Example 1: counters shared by N worker processes, exact totals at the end.
//
//   counters [WORKERS [INCREMENTS]]     (defaults: 4 workers, 1000000 each)
//
// The parent creates a channel, allocates one Counter and names it with a
// root; each worker joins with the member capability, looks the root up
// and adds to the mapped field with fetch_add: no RPC per increment. The
// parent sleeps until workers_done changes (WaitChanged; each worker
// wakes it with Notify when it is done), printing progress.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "example_util.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"

#define COUNTER_FIELDS(F) F(hits, u64) F(workers_done, u32)
STRUCTD_STRUCT(Counter, COUNTER_FIELDS);

using structd::client::Client;
using structd::examples::Check;

namespace {

int Worker(const std::string& channel, const std::string& capability, long increments) {
  auto client = Client::Connect();
  Check(client.status(), "connect");
  auto ch = (*client)->Join(channel, capability);
  Check(ch.status(), "join");
  auto ref = (*ch)->GetRoot("hits");
  Check(ref.status(), "root");
  auto counter = (*ch)->View<Counter>(*ref);
  Check(counter.status(), "view");
  for (long i = 0; i < increments; ++i) counter->hits().fetch_add(1);
  counter->workers_done().fetch_add(1, std::memory_order_release);
  counter->workers_done().NotifyAll();  // wakes the parent's WaitChanged
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "worker") {
    return Worker(argv[2], argv[3], std::atol(argv[4]));
  }
  int workers = argc > 1 ? std::atoi(argv[1]) : 4;
  long increments = argc > 2 ? std::atol(argv[2]) : 1000000;
  auto client = Client::Connect();
  Check(client.status(), "connect");
  std::string name = "example-counters-" + std::to_string(getpid());
  auto created = (*client)->CreateChannel(name);
  Check(created.status(), "create channel");
  auto& ch = *created->channel;
  auto counter = ch.Allocate<Counter>();
  Check(counter.status(), "allocate");
  Check(ch.SetRoot("hits", counter->ref()), "set root");

  auto start = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  for (int i = 0; i < workers; ++i) {
    pids.push_back(structd::examples::SpawnSelf(
        {"worker", name, created->member_capability, std::to_string(increments)}));
  }
  bool ok = true;
  // Sleep until each worker says it is done. A worker that dies first
  // never says so: once a second, see whether one has exited.
  uint32_t done = 0;
  std::vector<pid_t> running = pids;
  while (done < static_cast<uint32_t>(workers) && ok) {
    auto now = (*counter)->workers_done().WaitChanged(done, std::chrono::seconds(1));
    if (now.ok()) {
      done = *now;
      std::printf("%u of %d workers done\n", done, workers);
      continue;
    }
    for (auto it = running.begin(); it != running.end();) {
      int status = 0;
      if (waitpid(*it, &status, WNOHANG) != *it) {
        ++it;
        continue;
      }
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "worker %d failed before it was done\n", static_cast<int>(*it));
        ok = false;
      }
      it = running.erase(it);
    }
  }
  for (pid_t pid : running) ok = structd::examples::WaitOk(pid) && ok;
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  uint64_t hits = (*counter)->hits().load();
  uint64_t expected = static_cast<uint64_t>(workers) * static_cast<uint64_t>(increments);
  std::printf("%d workers x %ld increments: hits = %llu (expected %llu) in %.2f s\n",
              workers, increments, static_cast<unsigned long long>(hits),
              static_cast<unsigned long long>(expected), seconds);
  counter->Reset();
  Check((*client)->DropChannel(name, created->owner_capability), "drop channel");
  return ok && hits == expected ? 0 : 1;
}
