#include "testing/other_uid.h"

#include <grp.h>
#include <unistd.h>

#include "testing/child_process.h"

namespace structd::testing {

bool CanSwitchUid() { return geteuid() == 0; }

int RunAsUid(uid_t uid, gid_t gid, const std::function<int()>& body) {
  ChildProcess child([&]() -> int {
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      return 98;
    }
    return body();
  });
  return child.Wait();
}

}  // namespace structd::testing
