// compare_bench: structd side by side with the alternatives users weigh it
// against, every comparison a ratio measured in the same run on the same
// machine. Method and latest figures: BENCHMARKS.md. Run everything with
// tests/bench/run.sh (installs Redis, hiredis and LMDB, starts its own
// servers on Unix sockets in a temp dir).
//
//   compare_bench [--benchmark_* flags]          the Google Benchmark part
//   compare_bench --scale [INSTANCES] [CLIENTS]  daemon RSS at 1M instances,
//                                                16 attached clients
//
// Child modes (started by the program itself): contend-structd,
// contend-raw, handoff, scale.

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench.pb.h"
#include "structd/client/admin.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "tests/bench/bench_daemon.h"
#include "tests/bench/bench_io.h"
#include "tests/bench/bench_report.h"
#include "testing/daemon_process.h"
#include "testing/grpc_client.h"
#include "testing/spawned_process.h"
#include "testing/temp_dir.h"

namespace structd::bench {
namespace {

// A 64-byte record: eight u64 fields.
#define RECORD_FIELDS(F) \
  F(counter, u64) F(f1, u64) F(f2, u64) F(f3, u64) F(f4, u64) F(f5, u64) F(f6, u64) F(f7, u64)
STRUCTD_STRUCT(Record, RECORD_FIELDS);

// 16 bytes of data.
#define SMALL_FIELDS(F) F(value, u64) F(other, u64)
STRUCTD_STRUCT(Small, SMALL_FIELDS);

// A list node with 64 bytes of data (as bench.proto's Node with its pad).
class ListNode;
#define LIST_NODE_FIELDS(F) F(value, u64) F(next, ref(ListNode)) F(pad, array(u8, 48))
STRUCTD_STRUCT(ListNode, LIST_NODE_FIELDS);

using client::Ref;

std::string g_self;  // this program, for child processes

// ---------------------------------------------------------------------------
// Setup shared by the benchmarks.

struct Fixture : BenchDaemon {
  testing::TempDir dir;
  client::Owned<Record> record;
  client::TypeInfo record_type;
  std::unique_ptr<client::AdminClient> admin;
  // Redis on a Unix socket.
  std::unique_ptr<testing::SpawnedProcess> redis;
  redisContext* redis_ctx = nullptr;
  // LMDB on tmpfs.
  MDB_env* lmdb = nullptr;
  MDB_dbi dbi = 0;
  // A raw std::atomic in a shared file mapping (the contended baseline).
  std::string raw_path;
  std::atomic<uint64_t>* raw = nullptr;

  ~Fixture() {
    record.Reset();
    if (redis_ctx) redisFree(redis_ctx);
    if (lmdb) mdb_env_close(lmdb);
    if (raw) munmap(raw, 4096);
  }
};
Fixture* g = nullptr;

absl::Status Fail(const std::string& what) { return absl::InternalError(what); }

absl::Status StartRedis(Fixture& f) {
  std::string sock = f.dir.Sub("redis.sock");
  f.redis = std::make_unique<testing::SpawnedProcess>(std::vector<std::string>{
      "/usr/bin/redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
      "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--dir",
      f.dir.path()});
  for (int i = 0; i < 500; ++i) {
    f.redis_ctx = redisConnectUnix(sock.c_str());
    if (f.redis_ctx && !f.redis_ctx->err) return absl::OkStatus();
    if (f.redis_ctx) redisFree(f.redis_ctx);
    f.redis_ctx = nullptr;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Fail("redis-server did not start (apt install redis-server)");
}

absl::Status OpenLmdb(Fixture& f) {
  std::string path = f.dir.Sub("lmdb");
  std::filesystem::create_directories(path);
  if (mdb_env_create(&f.lmdb) != 0) return Fail("mdb_env_create");
  mdb_env_set_mapsize(f.lmdb, 64 << 20);
  // No fsync, write through the map: the fastest LMDB setup, on tmpfs.
  if (int rc = mdb_env_open(f.lmdb, path.c_str(), MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP,
                            0600);
      rc != 0) {
    return Fail(std::string("mdb_env_open: ") + mdb_strerror(rc));
  }
  MDB_txn* txn;
  mdb_txn_begin(f.lmdb, nullptr, 0, &txn);
  mdb_dbi_open(txn, nullptr, 0, &f.dbi);
  char value[64] = {};
  MDB_val k{6, const_cast<char*>("record")}, v{64, value};
  mdb_put(txn, f.dbi, &k, &v, 0);
  return mdb_txn_commit(txn) == 0 ? absl::OkStatus() : Fail("mdb commit");
}

absl::Status SetUp(Fixture& f) {
  if (absl::Status s = f.Start("bench"); !s.ok()) return s;
  auto record = f.ch().Allocate<Record>();
  if (!record.ok()) return record.status();
  f.record = std::move(*record);
  auto type = f.ch().Use<Record>();
  if (!type.ok()) return type.status();
  f.record_type = *type;
  client::AdminOptions ao;
  ao.socket = f.daemon->socket();
  auto admin = client::AdminClient::Connect(ao);
  if (!admin.ok()) return admin.status();
  f.admin = std::move(*admin);
  // Connect now: the first call would otherwise pay for it.
  if (!f.admin->CheckHealth().ok()) return Fail("health check");
  if (absl::Status s = StartRedis(f); !s.ok()) return s;
  if (absl::Status s = OpenLmdb(f); !s.ok()) return s;
  f.raw_path = f.dir.Sub("raw");
  int fd = open(f.raw_path.c_str(), O_RDWR | O_CREAT, 0600);
  if (fd < 0 || ftruncate(fd, 4096) != 0) return Fail("raw file");
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return Fail("mmap raw");
  f.raw = new (p) std::atomic<uint64_t>(0);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// The same 64-byte record: structd fields vs Redis vs LMDB.

void BM_Record_Read_Structd(benchmark::State& state) {
  Record r = g->record.get();
  for (auto _ : state) {
    benchmark::DoNotOptimize(r.counter().load() + r.f1().load() + r.f2().load() +
                             r.f3().load() + r.f4().load() + r.f5().load() + r.f6().load() +
                             r.f7().load());
  }
}
BENCHMARK(BM_Record_Read_Structd);

void BM_Record_Write_Structd(benchmark::State& state) {
  Record r = g->record.get();
  uint64_t v = 0;
  for (auto _ : state) {
    ++v;
    r.counter().store(v), r.f1().store(v), r.f2().store(v), r.f3().store(v);
    r.f4().store(v), r.f5().store(v), r.f6().store(v), r.f7().store(v);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Record_Write_Structd);

void BM_Record_Incr_Structd(benchmark::State& state) {
  auto counter = g->record->counter();
  for (auto _ : state) benchmark::DoNotOptimize(counter.fetch_add(1));
}
BENCHMARK(BM_Record_Incr_Structd);

void RedisCommand(benchmark::State& state, const char* format, const char* value = nullptr) {
  auto* reply = static_cast<redisReply*>(
      value ? redisCommand(g->redis_ctx, format, value, size_t{64}) : redisCommand(g->redis_ctx, format));
  if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) {
    state.SkipWithError("redis command failed");
  }
  if (reply) freeReplyObject(reply);
}

const char kValue64[65] = "0123456789012345678901234567890123456789012345678901234567890123";

void BM_Record_Read_Redis(benchmark::State& state) {
  RedisCommand(state, "SET record %b", kValue64);
  for (auto _ : state) RedisCommand(state, "GET record");
}
BENCHMARK(BM_Record_Read_Redis);

void BM_Record_Write_Redis(benchmark::State& state) {
  for (auto _ : state) RedisCommand(state, "SET record %b", kValue64);
}
BENCHMARK(BM_Record_Write_Redis);

void BM_Record_Incr_Redis(benchmark::State& state) {
  for (auto _ : state) RedisCommand(state, "INCR counter");
}
BENCHMARK(BM_Record_Incr_Redis);

// 16 commands in one round trip; the time per command is reported.
void RedisPipelined(benchmark::State& state, const char* format, bool with_value) {
  constexpr int kDepth = 16;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kDepth; ++i) {
      if (with_value) {
        redisAppendCommand(g->redis_ctx, format, kValue64, size_t{64});
      } else {
        redisAppendCommand(g->redis_ctx, format);
      }
    }
    for (int i = 0; i < kDepth; ++i) {
      void* reply = nullptr;
      if (redisGetReply(g->redis_ctx, &reply) != REDIS_OK) state.SkipWithError("redis reply");
      if (reply) freeReplyObject(reply);
    }
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kDepth);
  }
}
void BM_Record_Read_RedisPipe16(benchmark::State& s) { RedisPipelined(s, "GET record", false); }
void BM_Record_Write_RedisPipe16(benchmark::State& s) { RedisPipelined(s, "SET record %b", true); }
void BM_Record_Incr_RedisPipe16(benchmark::State& s) { RedisPipelined(s, "INCR counter", false); }
BENCHMARK(BM_Record_Read_RedisPipe16)->UseManualTime();
BENCHMARK(BM_Record_Write_RedisPipe16)->UseManualTime();
BENCHMARK(BM_Record_Incr_RedisPipe16)->UseManualTime();

void BM_Record_Read_Lmdb(benchmark::State& state) {
  MDB_txn* txn;
  mdb_txn_begin(g->lmdb, nullptr, MDB_RDONLY, &txn);
  mdb_txn_reset(txn);
  MDB_val k{6, const_cast<char*>("record")}, v;
  for (auto _ : state) {
    mdb_txn_renew(txn);  // the cheap way to read again (no new txn object)
    if (mdb_get(txn, g->dbi, &k, &v) != 0) state.SkipWithError("mdb_get");
    benchmark::DoNotOptimize(static_cast<const char*>(v.mv_data)[63]);
    mdb_txn_reset(txn);
  }
  mdb_txn_abort(txn);
}
BENCHMARK(BM_Record_Read_Lmdb);

void BM_Record_Write_Lmdb(benchmark::State& state) {
  MDB_val k{6, const_cast<char*>("record")}, v{64, const_cast<char*>(kValue64)};
  for (auto _ : state) {
    MDB_txn* txn;
    mdb_txn_begin(g->lmdb, nullptr, 0, &txn);
    mdb_put(txn, g->dbi, &k, &v, 0);
    if (mdb_txn_commit(txn) != 0) state.SkipWithError("mdb commit");
  }
}
BENCHMARK(BM_Record_Write_Lmdb);

// ---------------------------------------------------------------------------
// Contended fetch_add: another process adds to the same field meanwhile.

void Contended(benchmark::State& state, std::vector<std::string> child_args,
               std::atomic<uint64_t>* raw, Record* record) {
  testing::SpawnedProcess child(child_args);
  if (child.ReadLine(std::chrono::seconds(10)) != "ready") {
    state.SkipWithError("contending child did not start");
    return;
  }
  for (auto _ : state) {
    if (raw) {
      benchmark::DoNotOptimize(raw->fetch_add(1, std::memory_order_relaxed));
    } else {
      benchmark::DoNotOptimize(record->counter().fetch_add(1));
    }
  }
}

void BM_Contended_FetchAdd_Structd(benchmark::State& state) {
  Record r = g->record.get();
  Contended(state,
            {g_self, "contend-structd", g->daemon->socket(), "bench",
             g->created.member_capability, r.ref().ToString()},
            nullptr, &r);
}
BENCHMARK(BM_Contended_FetchAdd_Structd);

void BM_Contended_FetchAdd_Raw(benchmark::State& state) {
  Contended(state, {g_self, "contend-raw", g->raw_path}, g->raw, nullptr);
}
BENCHMARK(BM_Contended_FetchAdd_Raw);

// ---------------------------------------------------------------------------
// Handing state to another process: one ref vs Protobuf over a socket.

struct Handoff {
  std::unique_ptr<testing::SpawnedProcess> child;
  int fd = -1;  // our end of a Unix socketpair; the child's end is inherited
  ~Handoff() {
    if (fd >= 0) close(fd);
  }
};

std::unique_ptr<Handoff> StartHandoffChild() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return nullptr;
  fcntl(sv[0], F_SETFD, FD_CLOEXEC);  // ours; the child inherits sv[1]
  auto h = std::make_unique<Handoff>();
  h->child = std::make_unique<testing::SpawnedProcess>(
      std::vector<std::string>{g_self, "handoff", g->daemon->socket(), "bench",
                               g->created.member_capability, std::to_string(sv[1])});
  close(sv[1]);
  h->fd = sv[0];
  if (h->child->ReadLine(std::chrono::seconds(10)) != "ready") return nullptr;
  return h;
}

// Sizes: 16 B (one Small), 64 KiB and 1 MiB (lists of 64-byte nodes).
void BM_Handoff_Structd(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  auto h = StartHandoffChild();
  if (!h) return state.SkipWithError("handoff child did not start");
  client::Channel& ch = g->ch();
  char tag;
  std::vector<client::Owned<ListNode>> nodes;
  client::Owned<Small> small;
  Ref head;
  if (bytes <= 16) {
    small = std::move(*ch.Allocate<Small>());
    small->value().store(42);
    head = small.ref();
    tag = 'S';
  } else {
    nodes = std::move(*ch.AllocateBatch<ListNode>(static_cast<uint32_t>(bytes / 64)));
    client::RefStores links;
    for (size_t i = 0; i < nodes.size(); ++i) {
      nodes[i]->value().store(i + 42);
      if (i + 1 < nodes.size()) links.Move(nodes[i]->next(), nodes[i + 1]);
    }
    if (!ch.Store(links).ok()) return state.SkipWithError("linking");
    head = nodes[0].ref();
    tag = 'N';
  }
  uint64_t bits = head.bits(), value = 0;
  for (auto _ : state) {
    char msg[9];
    msg[0] = tag;
    std::memcpy(msg + 1, &bits, 8);
    if (!WriteAll(h->fd, msg, 9) || !ReadAll(h->fd, &value, 8)) {
      return state.SkipWithError("handoff i/o");
    }
  }
  if (value != 42) state.SkipWithError("the child read a wrong value");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_Handoff_Structd)->Arg(16)->Arg(64 << 10)->Arg(1 << 20);

void BM_Handoff_Protobuf(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  auto h = StartHandoffChild();
  if (!h) return state.SkipWithError("handoff child did not start");
  // The same data as a message (built once, serialized each time: the
  // sender's state lives in its own objects, as it would).
  Graph graph;
  size_t count = bytes <= 16 ? 1 : bytes / 64;
  for (size_t i = 0; i < count; ++i) {
    Node* n = graph.add_nodes();
    n->set_value(i + 42);
    n->set_next(i + 1);
    if (bytes > 16) n->set_pad(std::string(48, 'x'));
  }
  std::string wire;
  uint64_t value = 0;
  for (auto _ : state) {
    graph.SerializeToString(&wire);
    uint32_t len = static_cast<uint32_t>(wire.size());
    char tag = 'P';
    if (!WriteAll(h->fd, &tag, 1) || !WriteAll(h->fd, &len, 4) ||
        !WriteAll(h->fd, wire.data(), wire.size()) || !ReadAll(h->fd, &value, 8)) {
      return state.SkipWithError("handoff i/o");
    }
  }
  if (value != 42) state.SkipWithError("the child read a wrong value");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_Handoff_Protobuf)->Arg(16)->Arg(64 << 10)->Arg(1 << 20);

// ---------------------------------------------------------------------------
// Control RPCs vs a bare unary call (the health check) on the same socket.

void BM_Rpc_EmptyUnary(benchmark::State& state) {
  for (auto _ : state) {
    if (!g->admin->CheckHealth().ok()) state.SkipWithError("health");
  }
}
BENCHMARK(BM_Rpc_EmptyUnary);

void BM_Rpc_RegisterType(benchmark::State& state) {
  std::vector<shm::FieldSpec> specs = Record::FieldSpecs();
  for (auto _ : state) {
    if (!g->ch().RegisterType("Record", specs).ok()) state.SkipWithError("register");
  }
}
BENCHMARK(BM_Rpc_RegisterType);

void BM_Rpc_DescribeType(benchmark::State& state) {
  for (auto _ : state) {
    if (!g->ch().DescribeType(g->record_type.token).ok()) state.SkipWithError("describe");
  }
}
BENCHMARK(BM_Rpc_DescribeType);

// The Instances.Allocate and AllocateBatch calls themselves, as a client
// in another language makes them (the C++ client's Allocate<T>() takes
// from a local stock and calls nothing: client_bench measures that).
void AllocateLoop(benchmark::State& state, uint32_t n) {
  testing::GrpcClient rpc(g->daemon->target());
  if (!rpc.Join("bench", g->created.member_capability)) {
    return state.SkipWithError("join over gRPC");
  }
  const std::string token = g->record_type.token.ToHex();
  v1::ReleaseRequest release;
  release.set_channel("bench");
  auto give_back = [&] {
    if (release.refs_size() == 0) return true;
    v1::ReleaseResponse out;
    bool ok = rpc.instances().Release(rpc.Ctx().get(), release, &out).ok();
    release.clear_refs();
    return ok;
  };
  for (auto _ : state) {
    if (n == 1) {
      v1::AllocateRequest req;
      req.set_channel("bench");
      req.set_token(token);
      v1::AllocateResponse out;
      if (!rpc.instances().Allocate(rpc.Ctx().get(), req, &out).ok()) {
        return state.SkipWithError("Allocate");
      }
      release.add_refs(out.ref());
    } else {
      v1::AllocateBatchRequest req;
      req.set_channel("bench");
      req.set_token(token);
      req.set_count(n);
      v1::AllocateBatchResponse out;
      if (!rpc.instances().AllocateBatch(rpc.Ctx().get(), req, &out).ok()) {
        return state.SkipWithError("AllocateBatch");
      }
      for (uint64_t r : out.refs()) release.add_refs(r);
    }
    if (release.refs_size() >= 100000) {
      state.PauseTiming();
      if (!give_back()) return state.SkipWithError("Release");
      state.ResumeTiming();
    }
  }
  if (!give_back()) state.SkipWithError("Release");
}
void BM_Rpc_Allocate1(benchmark::State& state) { AllocateLoop(state, 1); }
void BM_Rpc_Allocate1000(benchmark::State& state) { AllocateLoop(state, 1000); }
BENCHMARK(BM_Rpc_Allocate1);
BENCHMARK(BM_Rpc_Allocate1000);

constexpr Pair kPairs[] = {
    {"64B record read: structd vs Redis GET", "BM_Record_Read_Structd", "BM_Record_Read_Redis",
     "redis GET", 0, true},
    {"64B record read: structd vs Redis GET (pipeline 16)", "BM_Record_Read_Structd",
     "BM_Record_Read_RedisPipe16", "redis GET x16/16", 0, true},
    {"64B record read: structd vs LMDB get", "BM_Record_Read_Structd", "BM_Record_Read_Lmdb",
     "lmdb get", 0, true},
    {"64B record write: structd vs Redis SET", "BM_Record_Write_Structd",
     "BM_Record_Write_Redis", "redis SET", 0, true},
    {"64B record write: structd vs Redis SET (pipeline 16)", "BM_Record_Write_Structd",
     "BM_Record_Write_RedisPipe16", "redis SET x16/16", 0, true},
    {"64B record write: structd vs LMDB put", "BM_Record_Write_Structd",
     "BM_Record_Write_Lmdb", "lmdb put+commit", 0, true},
    {"counter incr: structd fetch_add vs Redis INCR", "BM_Record_Incr_Structd",
     "BM_Record_Incr_Redis", "redis INCR", 0, true},
    {"counter incr: structd vs Redis INCR (pipeline 16)", "BM_Record_Incr_Structd",
     "BM_Record_Incr_RedisPipe16", "redis INCR x16/16", 0, true},
    {"contended fetch_add, 2 processes", "BM_Contended_FetchAdd_Structd",
     "BM_Contended_FetchAdd_Raw", "raw atomic, 2 processes", 2.0, true},
    {"handoff 16 B: one ref vs protobuf", "BM_Handoff_Structd/16", "BM_Handoff_Protobuf/16",
     "protobuf over a socket", 0, true},
    {"handoff 64 KiB: one ref vs protobuf", "BM_Handoff_Structd/65536",
     "BM_Handoff_Protobuf/65536", "protobuf over a socket", 0, true},
    {"handoff 1 MiB: one ref vs protobuf", "BM_Handoff_Structd/1048576",
     "BM_Handoff_Protobuf/1048576", "protobuf over a socket", 0, true},
    {"handoff flatness: 1 MiB vs 16 B (structd)", "BM_Handoff_Structd/1048576",
     "BM_Handoff_Structd/16", "structd 16 B", 1.5, true},
    {"RegisterType vs empty unary", "BM_Rpc_RegisterType", "BM_Rpc_EmptyUnary", "empty unary",
     1.5, true},
    {"DescribeType vs empty unary", "BM_Rpc_DescribeType", "BM_Rpc_EmptyUnary", "empty unary",
     1.5, true},
    {"Instances.Allocate (gRPC) vs empty unary", "BM_Rpc_Allocate1", "BM_Rpc_EmptyUnary", "empty unary", 1.5,
     true},
    {"Instances.AllocateBatch of 1000 vs empty unary", "BM_Rpc_Allocate1000", "BM_Rpc_EmptyUnary",
     "empty unary", 0, true},
};

// ---------------------------------------------------------------------------
// Child processes.

int ContendStructd(char** argv) {
  std::optional<ChildSession> ch = JoinFromArgs(argv);
  if (!ch) return 3;
  auto r = (*ch)->View<Record>(*Ref::Parse(argv[5]));
  if (!r.ok()) return 4;
  auto counter = r->counter();
  std::printf("ready\n");
  std::fflush(stdout);
  while (true) counter.fetch_add(1);
}

int ContendRaw(char** argv) {
  int fd = open(argv[2], O_RDWR);
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return 4;
  auto* a = static_cast<std::atomic<uint64_t>*>(p);
  std::printf("ready\n");
  std::fflush(stdout);
  while (true) a->fetch_add(1, std::memory_order_relaxed);
}

int HandoffChild(char** argv) {
  std::optional<ChildSession> ch = JoinFromArgs(argv);
  if (!ch) return 3;
  const int fd = std::atoi(argv[5]);
  std::printf("ready\n");
  std::fflush(stdout);
  std::string buf;
  Graph graph;
  while (true) {
    char tag;
    if (!ReadAll(fd, &tag, 1)) return 0;
    uint64_t value = 0;
    if (tag == 'S' || tag == 'N') {
      uint64_t bits;
      if (!ReadAll(fd, &bits, 8)) return 0;
      if (tag == 'S') {
        auto v = (*ch)->View<Small>(Ref::FromBits(bits));
        value = v.ok() ? v->value().load() : 0;
      } else {
        auto v = (*ch)->View<ListNode>(Ref::FromBits(bits));
        value = v.ok() ? v->value().load() : 0;
      }
    } else {
      uint32_t len;
      if (!ReadAll(fd, &len, 4)) return 0;
      buf.resize(len);
      if (!ReadAll(fd, buf.data(), len)) return 0;
      graph.ParseFromString(buf);
      value = graph.nodes_size() > 0 ? graph.nodes(0).value() : 0;
    }
    if (!WriteAll(fd, &value, 8)) return 0;
  }
}

// Does `ops` rounds of load + store + fetch_add on its own Record; prints
// "cpu_ns_per_op WALL_NS_PER_OP".
int ScaleChild(char** argv) {
  std::optional<ChildSession> ch = JoinFromArgs(argv);
  if (!ch) return 3;
  auto mine = (*ch)->Allocate<Record>();
  if (!mine.ok()) return 4;
  long ops = std::atol(argv[5]);
  std::printf("ready\n");
  std::fflush(stdout);
  char go;
  if (read(std::atoi(argv[6]), &go, 1) != 1) return 5;  // start together
  timespec c0, c1;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
  auto w0 = std::chrono::steady_clock::now();
  Record r = mine->get();
  for (long i = 0; i < ops; ++i) {
    uint64_t v = r.f1().load();
    r.f2().store(v + 1);
    r.counter().fetch_add(1);
  }
  auto wall = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - w0).count();
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
  double cpu = (c1.tv_sec - c0.tv_sec) * 1e9 + (c1.tv_nsec - c0.tv_nsec);
  std::printf("%.3f %.3f\n", cpu / (3.0 * ops), wall / (3.0 * ops));
  std::fflush(stdout);
  return r.counter().load() == static_cast<uint64_t>(ops) ? 0 : 6;
}

// ---------------------------------------------------------------------------
// Scale: daemon memory with 1M live instances; 16 attached clients.

uint64_t StatusKb(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::strtoull(line.c_str() + std::strlen(field), nullptr, 10);
  }
  return 0;
}

// Runs `n` scale children together (one byte on an inherited pipe releases
// each);
// returns the median cpu and wall ns per op.
std::pair<double, double> RunScaleChildren(int n, long ops) {
  std::vector<std::unique_ptr<testing::SpawnedProcess>> kids;
  std::vector<int> go_fds;
  for (int i = 0; i < n; ++i) {
    int p[2];
    if (pipe(p) != 0) return {0, 0};
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
    kids.push_back(std::make_unique<testing::SpawnedProcess>(std::vector<std::string>{
        g_self, "scale", g->daemon->socket(), "bench", g->created.member_capability,
        std::to_string(ops), std::to_string(p[0])}));
    close(p[0]);
    go_fds.push_back(p[1]);
  }
  for (auto& k : kids) {
    if (k->ReadLine(std::chrono::seconds(20)) != "ready") return {0, 0};
  }
  for (int fd : go_fds) {
    (void)!write(fd, "g", 1);
    close(fd);
  }
  std::vector<double> cpu, wall;
  for (auto& k : kids) {
    double c = 0, w = 0;
    if (std::sscanf(k->ReadLine(std::chrono::seconds(120)).c_str(), "%lf %lf", &c, &w) == 2) {
      cpu.push_back(c);
      wall.push_back(w);
    }
    k->Wait();
  }
  if (cpu.empty()) return {0, 0};
  std::sort(cpu.begin(), cpu.end());
  std::sort(wall.begin(), wall.end());
  return {cpu[cpu.size() / 2], wall[wall.size() / 2]};
}

int Scale(uint32_t instances, int clients) {
  pid_t daemon = g->daemon->pid();
  uint64_t anon0 = StatusKb(daemon, "RssAnon:"), shm0 = StatusKb(daemon, "RssShmem:") +
                                                         StatusKb(daemon, "RssFile:");
  std::vector<Ref> held;
  uint64_t anon_first = 0;  // after the first batch: gRPC and malloc warmed up
  uint32_t first_batch = 0;
  auto start = std::chrono::steady_clock::now();
  for (uint32_t done = 0; done < instances;) {
    uint32_t n = std::min<uint32_t>(100000, instances - done);
    auto made = g->ch().AllocateBatch<Small>(n);
    if (!made.ok()) {
      std::fprintf(stderr, "allocate: %s\n", made.status().ToString().c_str());
      return 1;
    }
    for (auto& o : *made) held.push_back(o.Disown());
    done += n;
    if (first_batch == 0) {
      first_batch = n;
      anon_first = StatusKb(daemon, "RssAnon:");
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t anon1 = StatusKb(daemon, "RssAnon:"), shm1 = StatusKb(daemon, "RssShmem:") +
                                                         StatusKb(daemon, "RssFile:");
  std::printf("\nscale: %u live instances allocated in %.2f s (%.0f ns each, batches of 100000)\n",
              instances, secs, secs * 1e9 / instances);
  std::printf("daemon private memory (RssAnon): %.1f MiB before, %.1f MiB after: %+.1f MiB, "
              "%.2f bytes per instance\n",
              anon0 / 1024.0, anon1 / 1024.0, (double(anon1) - double(anon0)) / 1024.0,
              (double(anon1) - double(anon0)) * 1024.0 / instances);
  std::printf("daemon mapped arena pages (RssShmem+RssFile): %.1f MiB -> %.1f MiB "
              "(shared memory, not daemon metadata)\n",
              shm0 / 1024.0, shm1 / 1024.0);
  // The first batch warms up the RPC path (buffers malloc keeps); what
  // matters is growth with the instance count after that.
  if (instances > first_batch) {
    std::printf("daemon RssAnon after %u instances: %.1f MiB, after %u: %.1f MiB: %.3f bytes per "
                "added instance; ratio %.2f (target: flat, about 1)\n",
                first_batch, anon_first / 1024.0, instances, anon1 / 1024.0,
                (double(anon1) - double(anon_first)) * 1024.0 / (instances - first_batch),
                anon_first ? double(anon1) / double(anon_first) : 0.0);
  }
  (void)g->ch().Release(held);

  const long ops = 2000000;
  auto [cpu1, wall1] = RunScaleChildren(1, ops);
  auto [cpun, walln] = RunScaleChildren(clients, ops);
  std::printf("\n%d attached clients, each %ld x (load + store + fetch_add) on its own instance:\n",
              clients, ops);
  std::printf("  1 client: %.2f ns/op CPU, %.2f ns/op wall\n", cpu1, wall1);
  std::printf("  %d clients: median %.2f ns/op CPU, %.2f ns/op wall (%u cores: wall includes "
              "waiting for a core)\n",
              clients, cpun, walln, std::thread::hardware_concurrency());
  std::printf("  ratio CPU per op, %d clients / 1: %.2f (target: about 1: no shared "
              "bottleneck)\n",
              clients, cpu1 > 0 ? cpun / cpu1 : 0.0);
  return 0;
}

}  // namespace
}  // namespace structd::bench

int main(int argc, char** argv) {
  using namespace structd::bench;
  g_self = std::filesystem::canonical("/proc/self/exe").string();
  if (argc >= 2) {
    std::string mode = argv[1];
    if (mode == "contend-structd" && argc == 6) return ContendStructd(argv);
    if (mode == "contend-raw" && argc == 3) return ContendRaw(argv);
    if (mode == "handoff" && argc == 6) return HandoffChild(argv);
    if (mode == "scale" && argc == 7) return ScaleChild(argv);
  }
  bool scale = argc >= 2 && std::string(argv[1]) == "--scale";
  Args args = SmokeArgs(scale ? 1 : argc, argv);
  std::optional<benchmark::ConsoleReporter::OutputOptions> options;
  if (!scale) {
    options = InitializeBenchmarks(args);
    if (!options) return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  auto fixture = std::make_unique<Fixture>();
  if (absl::Status s = SetUp(*fixture); !s.ok()) {
    std::fprintf(stderr, "compare_bench: setup failed: %s\n", s.ToString().c_str());
    return 1;
  }
  g = fixture.get();
  int rc = 0;
  if (scale) {
    uint32_t instances = argc > 2 ? static_cast<uint32_t>(std::atol(argv[2])) : 1000000;
    int clients = argc > 3 ? std::atoi(argv[3]) : 16;
    rc = Scale(instances, clients);
  } else {
    rc = RunBenchmarks("compare_bench", *options, kPairs, [](const CollectingReporter& r) {
      if (auto batch = r.NsPerOp("BM_Rpc_Allocate1000", true)) {
        std::printf("batch allocation: %.0f ns per instance in calls of 1000 (target: well "
                    "under 1000 ns) %s\n",
                    *batch / 1000, *batch / 1000 < 1000 ? "OK" : "MISS");
      }
    });
  }
  g = nullptr;
  fixture.reset();
  return rc;
}
