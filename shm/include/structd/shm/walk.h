#ifndef STRUCTD_SHM_WALK_H_
#define STRUCTD_SHM_WALK_H_

// Read-only enumeration of an arena's live instances, for inspection and
// consistency checks. Works on any Arena (read-only openers included) and
// never writes. The arena is untrusted: damaged descriptors are reported
// and skipped, never followed.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "structd/shm/arena.h"

namespace structd::shm {

struct WalkProblem {
  Ref ref;  // null if the problem is not about one instance
  std::string what;
};

// Calls `fn` for every published instance (type_index != 0), in arena
// order. Returns the problems met on the way (damaged descriptors,
// unreadable extents). `fn` returns false to stop early.
std::vector<WalkProblem> ForEachInstance(
    const Arena& arena, const std::function<bool(const InstancePtr&)>& fn);

}  // namespace structd::shm

#endif  // STRUCTD_SHM_WALK_H_
