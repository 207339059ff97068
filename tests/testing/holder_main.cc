// structd_test_holder: a client process for fault tests. It attaches, joins
// CHANNEL with CAPABILITY, allocates COUNT instances of TOKEN, locks the
// mutex field MUTEX_OFFSET of the first one (if given), prints
// "ready FIRST_REF_HEX" and then waits to be killed.
//
//   structd_test_holder TARGET CHANNEL CAPABILITY TOKEN COUNT [MUTEX_OFFSET]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "structd/shm/arena.h"
#include "structd/shm/sync.h"
#include "testing/grpc_client.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s TARGET CHANNEL CAPABILITY TOKEN COUNT "
                 "[MUTEX_OFFSET]\n", argv[0]);
    return 2;
  }
  structd::testing::GrpcClient c(argv[1]);
  structd::v1::JoinChannelResponse joined;
  if (!c.Join(argv[2], argv[3], &joined)) return 3;
  structd::v1::AllocateBatchRequest req;
  req.set_channel(argv[2]);
  req.set_token(argv[4]);
  req.set_count(static_cast<uint32_t>(std::atoi(argv[5])));
  structd::v1::AllocateBatchResponse resp;
  if (!c.instances().AllocateBatch(c.Ctx().get(), req, &resp).ok()) return 4;
  auto arena = c.MapArena(argv[2]);
  if (!arena.ok()) return 5;
  structd::shm::MutexGuard guard;
  if (argc > 6) {
    auto inst = (*arena)->Resolve(structd::shm::Ref::FromBits(resp.refs(0)));
    if (!inst.ok()) return 6;
    structd::shm::MutexField mu(inst->payload() + std::atoi(argv[6]));
    auto g = mu.Lock();
    if (!g.ok()) return 7;
    guard = std::move(*g);
  }
  std::printf("ready %llx\n", static_cast<unsigned long long>(resp.refs(0)));
  std::fflush(stdout);
  for (;;) pause();
}
