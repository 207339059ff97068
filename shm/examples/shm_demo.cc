// shm_demo: the shm library on its own, in one process. Creates an arena
// in a temporary directory, registers nothing (no daemon yet), allocates a
// struct, forks a child that increments a counter field, and prints what
// the parent sees.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "structd/shm/allocator.h"
#include "structd/shm/arena.h"
#include "structd/shm/field.h"
#include "structd/shm/layout.h"

using namespace structd::shm;

int main() {
  std::string dir = "/tmp/structd-demo-" + std::to_string(getpid());
  auto layout = Layout::Compute({FieldSpec::Scalar("hits", FieldKind::kU64),
                                 FieldSpec::String("greeting", 32)});
  if (!layout.ok()) return 1;
  std::printf("layout %s\n%s", FingerprintHex(layout->fingerprint()).c_str(),
              layout->ToString().c_str());
  ArenaOptions options;
  options.extent_size = 1 << 20;
  auto arena = Arena::Create(dir, options);
  if (!arena.ok()) {
    std::fprintf(stderr, "%s\n", arena.status().ToString().c_str());
    return 1;
  }
  auto alloc = Allocator::Adopt(arena->get());
  auto ref = (*alloc)->Allocate(1, *layout);
  if (!ref.ok()) return 1;
  std::printf("allocated %s\n", ref->ToString().c_str());
  auto hits = *FieldHandle::BindScalar<uint64_t>(*layout, "hits");
  auto greeting = *FieldHandle::Bind(*layout, "greeting", FieldKind::kString);

  pid_t child = fork();
  if (child == 0) {
    // Another process: open the arena by path and resolve the 64-bit ref.
    auto mine = Arena::Open(dir, Access::kReadWrite);
    auto inst = (*mine)->Resolve(*ref);
    for (int i = 0; i < 1000; ++i) hits.scalar<uint64_t>(*inst).fetch_add(1);
    (void)greeting.bytes(*inst).Write("hello from pid " +
                                      std::to_string(getpid()));
    _exit(0);
  }
  waitpid(child, nullptr, 0);
  auto inst = (*arena)->Resolve(*ref);
  std::printf("hits = %llu\n", static_cast<unsigned long long>(
                                   hits.scalar<uint64_t>(*inst).load()));
  std::printf("greeting = %s\n", greeting.bytes(*inst).Read()->c_str());
  std::filesystem::remove_all(dir);
  return 0;
}
