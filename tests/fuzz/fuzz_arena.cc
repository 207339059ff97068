// Fuzz target: opening an arena and resolving refs when its bytes are
// hostile. Each input is a list of patches (2-byte offset, 1-byte length,
// bytes; the top bit of the offset picks the header file or extent 0)
// applied to a small arena holding a few instances; then the arena is
// opened again, the allocator adopted, every instance walked and decoded,
// and refs from the input resolved. Nothing may read or write outside
// the mappings (run under AddressSanitizer), whatever the bytes.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "structd/shm/allocator.h"
#include "structd/shm/arena.h"
#include "structd/shm/field.h"
#include "structd/shm/format_value.h"
#include "structd/shm/layout.h"
#include "structd/shm/walk.h"
#include "testing/temp_dir.h"

namespace {

using namespace structd::shm;

struct State {
  structd::testing::TempDir dir;
  Layout layout;
  int round = 0;
};
State* g = nullptr;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g == nullptr) {
    g = new State;
    // The state lives as long as the process (fuzzers end with exit());
    // its files go with it.
    std::atexit([] { std::filesystem::remove_all(g->dir.path()); });
    g->layout = *Layout::Compute({FieldSpec::Scalar("v", FieldKind::kU64), FieldSpec::Ref("next"),
                                  FieldSpec::String("s", 12), FieldSpec::Mutex("m")});
  }
  std::string dir = g->dir.Sub("a" + std::to_string(g->round++ % 4));
  std::filesystem::remove_all(dir);
  ArenaOptions options;
  options.extent_size = 131072;
  options.max_extents = 4;
  auto arena = Arena::Create(dir, options);
  if (!arena.ok()) std::abort();
  auto alloc = Allocator::Adopt(arena->get());
  if (!alloc.ok()) std::abort();
  std::vector<Ref> refs;
  for (int i = 0; i < 6; ++i) refs.push_back(*(*alloc)->Allocate(1, g->layout));
  auto types = [](uint32_t index) -> const Layout* { return index == 1 ? &g->layout : nullptr; };
  RefField(const_cast<uint8_t*>((*arena)->Resolve(refs[0])->payload()) + 8).store(refs[1]);

  // Apply the patches.
  uint8_t* header = reinterpret_cast<uint8_t*>(&(*arena)->header());
  uint8_t* extent = *(*arena)->ExtentBase(0);
  size_t i = 0;
  std::vector<uint64_t> probe_refs;
  while (i + 3 <= size) {
    uint16_t off = static_cast<uint16_t>(data[i] | (data[i + 1] << 8));
    uint8_t len = data[i + 2];
    i += 3;
    if (off == 0xffff) {  // a ref to resolve later
      if (i + 8 <= size) {
        uint64_t r;
        std::memcpy(&r, data + i, 8);
        probe_refs.push_back(r);
        i += 8;
      }
      continue;
    }
    size_t n = std::min<size_t>(len, size - i);
    if (off & 0x8000) {
      size_t at = off & 0x7fff;  // within the 4 KiB header
      at %= sizeof(ArenaHeader);
      n = std::min(n, sizeof(ArenaHeader) - at);
      std::memcpy(header + at, data + i, n);
    } else {
      size_t at = static_cast<size_t>(off) * 2;  // the first 128 KiB
      n = std::min(n, options.extent_size - at);
      std::memcpy(extent + at, data + i, n);
    }
    i += n;
  }

  // Everything an opener, the owner and the checkers do with it.
  auto reopened = Arena::Open(dir, Access::kReadWrite);
  if (reopened.ok()) {
    (void)ForEachInstance(**reopened, [&](const InstancePtr& p) {
      if (p.type_index() == 1 && p.Fits(g->layout.size())) {
        for (const Field& f : g->layout.fields()) (void)FormatFieldValue(f, p);
      }
      return true;
    });
    for (uint64_t r : probe_refs) {
      auto p = (*reopened)->Resolve(Ref::FromBits(r));
      if (p.ok() && p->type_index() == 1 && p->Fits(g->layout.size())) {
        (void)BytesField(p->payload() + 16, 12).Read();
      }
    }
    for (Ref r : refs) (void)(*reopened)->Resolve(r);
    auto adopted = Allocator::Adopt(reopened->get());
    if (adopted.ok()) {
      // The owner keeps working on a damaged arena without harm.
      for (int k = 0; k < 4; ++k) {
        auto made = (*adopted)->Allocate(1, g->layout);
        if (made.ok()) (void)(*adopted)->Release(*made, types);
      }
      for (Ref r : refs) (void)(*adopted)->Release(r, types);
    }
  }
  return 0;
}
