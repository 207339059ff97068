#ifndef STRUCTD_TESTS_TESTING_OTHER_UID_H_
#define STRUCTD_TESTS_TESTING_OTHER_UID_H_

#include <sys/types.h>

#include <functional>

namespace structd::testing {

// Uids and gids that no account on a test machine uses: the tests drop to
// them to act as "another user" (no account is needed for setresuid).
inline constexpr uid_t kClientUid = 61001;
inline constexpr gid_t kClientGid = 61001;
inline constexpr uid_t kStrangerUid = 61002;
inline constexpr gid_t kStrangerGid = 61002;

// True when this process may become another user (it runs as root).
// Tests that need another uid call GTEST_SKIP() otherwise, so ctest
// reports them skipped, never passed.
bool CanSwitchUid();

// In a fork()ed child: drops every group and becomes uid/gid (real,
// effective and saved: there is no way back), then returns body()'s
// result as the child's exit code; a failed switch exits with 98. The
// parent gets that code (ChildProcess::Wait semantics: 128 + signal if
// killed). REQUIRES: CanSwitchUid().
int RunAsUid(uid_t uid, gid_t gid, const std::function<int()>& body);

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_OTHER_UID_H_
