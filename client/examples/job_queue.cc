// Example 4: a job queue on a port (doc/ports.md).
//
//   job_queue [JOBS]     (default 40)
//
// The producer builds Job structs and sends them to port "jobs". Two worker
// processes take them, each with its own behavior table bound to Job: the
// "careful" worker sums a..b with a loop (slowly), the "quick" one with
// Gauss's formula. Both write the result into the job and mark it done.
//
// The producer kills the careful worker in the middle of its first job, and
// nothing is lost: the producer keeps a reference of its own to every job
// and sends the port a second one (a message is the receiver's once
// received, and released if the receiver dies); a job taken by a worker
// that is gone is sent again. That acknowledgement (the "done" state in
// the job) is the application's: a port guarantees that a message is in
// the port or owned by exactly one live process, not that the work was
// done.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "example_util.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/client/port.h"

#define JOB_FIELDS(F) \
  F(id, u64) F(a, u64) F(b, u64) F(result, u64) F(state, u32) F(worker_pid, u32)
STRUCTD_STRUCT(Job, JOB_FIELDS);

// Job.state: written by the worker that took the job.
constexpr uint32_t kQueued = 0, kTaken = 1, kDone = 2;

// What a worker does with a Job: its own behavior table.
struct JobMethods {
  std::function<uint64_t(const Job&)> run;
};

using structd::client::Channel;
using structd::client::Client;
using structd::client::Owned;
using structd::examples::Check;

namespace {

int Worker(const std::string& channel, const std::string& capability, const std::string& kind) {
  auto client = Client::Connect();
  Check(client.status(), "connect");
  auto ch = (*client)->Join(channel, capability);
  Check(ch.status(), "join");
  Channel& c = **ch;
  JobMethods methods;
  if (kind == "careful") {
    methods.run = [](const Job& j) {
      uint64_t sum = 0;
      for (uint64_t i = j.a().load(); i <= j.b().load(); ++i) sum += i;
      std::this_thread::sleep_for(std::chrono::milliseconds(30));  // careful takes its time
      return sum;
    };
  } else {
    methods.run = [](const Job& j) {
      const uint64_t a = j.a().load(), b = j.b().load();
      return (a + b) * (b - a + 1) / 2;
    };
  }
  Check(c.Bind<Job>(methods), "bind");
  auto port = c.OpenPort<Job>("jobs");
  Check(port.status(), "open port");
  int done = 0;
  while (true) {
    absl::StatusOr<Owned<Job>> job = port->Receive(std::chrono::seconds(30));
    Check(job.status(), "receive");
    if ((*job)->id().load() == 0) break;  // the producer's "stop"
    (*job)->worker_pid().store(static_cast<uint32_t>(getpid()));
    (*job)->state().store(kTaken);
    auto result = c.Call(**job, &JobMethods::run);
    Check(result.status(), "run");
    (*job)->result().store(*result);
    (*job)->state().store(kDone);
    ++done;
  }  // each job's Owned is dropped here: the producer's reference keeps it
  std::printf("[%s pid %d] %d jobs done\n", kind.c_str(), getpid(), done);
  return 0;
}

bool Alive(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "worker") return Worker(argv[2], argv[3], argv[4]);
  const int jobs_wanted = argc > 1 ? std::max(4, std::atoi(argv[1])) : 40;
  auto client = Client::Connect();
  Check(client.status(), "connect");
  std::string name = "example-jobs-" + std::to_string(getpid());
  auto created = (*client)->CreateChannel(name);
  Check(created.status(), "create channel");
  Channel& c = *created->channel;
  Check(c.CreatePort("jobs", 16).status(), "create port");
  auto port = c.OpenPort<Job>("jobs");
  Check(port.status(), "open port");

  // Sends the port a reference of its own to `job` (the producer keeps
  // its own until the end).
  auto send = [&](const Owned<Job>& job) {
    auto message = c.Retain<Job>(job.ref());
    Check(message.status(), "retain");
    while (true) {
      absl::Status s = port->Send(*message);
      if (s.ok()) return;
      if (!absl::IsResourceExhausted(s)) Check(s, "send");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // full: workers are busy
    }
  };
  std::vector<Owned<Job>> jobs;
  for (int i = 1; i <= jobs_wanted; ++i) {
    auto job = c.Allocate<Job>();
    Check(job.status(), "allocate");
    (*job)->id().store(i);
    (*job)->a().store(i);
    (*job)->b().store(i * 1000);
    jobs.push_back(std::move(*job));
  }
  // The careful worker starts first and takes the first job; it is
  // killed in the middle of it.
  pid_t careful = structd::examples::SpawnSelf({"worker", name, created->member_capability, "careful"});
  send(jobs[0]);
  while (jobs[0]->state().load() != kTaken) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  kill(careful, SIGKILL);
  structd::examples::WaitOk(careful);
  std::printf("[producer] killed the careful worker (pid %d) in the middle of job 1\n", careful);
  std::fflush(stdout);
  pid_t quick = structd::examples::SpawnSelf({"worker", name, created->member_capability, "quick"});
  for (size_t i = 1; i < jobs.size(); ++i) send(jobs[i]);
  std::printf("[producer] %d jobs sent to port 'jobs'\n", jobs_wanted);
  std::fflush(stdout);

  // Jobs taken by a worker that is gone go back to the port.
  int resent = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    int done = 0;
    for (const Owned<Job>& job : jobs) {
      const uint32_t state = job->state().load();
      const pid_t by = static_cast<pid_t>(job->worker_pid().load());
      if (state == kDone) {
        ++done;
      } else if (state == kTaken && !Alive(by)) {
        job->state().store(kQueued);
        job->worker_pid().store(0);
        send(job);
        ++resent;
        std::printf("[producer] job %llu was taken by pid %d, which is gone: sent again\n",
                    static_cast<unsigned long long>(job->id().load()), by);
        std::fflush(stdout);
      }
    }
    if (done == jobs_wanted) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  int correct = 0;
  for (const Owned<Job>& job : jobs) {
    const uint64_t a = job->a().load(), b = job->b().load();
    correct += job->state().load() == kDone && job->result().load() == (a + b) * (b - a + 1) / 2;
  }
  // Stop the quick worker: a job with id 0.
  auto stop = c.Allocate<Job>();
  Check(stop.status(), "allocate");
  Check(port->Send(*stop), "send stop");
  const bool workers_ok = structd::examples::WaitOk(quick);
  std::printf("[producer] %d of %d jobs done and correct; %d sent again after a worker died\n",
              correct, jobs_wanted, resent);
  jobs.clear();
  Check((*client)->DropChannel(name, created->owner_capability), "drop channel");
  return correct == jobs_wanted && workers_ok ? 0 : 1;
}
