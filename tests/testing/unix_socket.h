#ifndef STRUCTD_TESTS_TESTING_UNIX_SOCKET_H_
#define STRUCTD_TESTS_TESTING_UNIX_SOCKET_H_

#include <string>

namespace structd::testing {

// A connected Unix stream socket (close-on-exec) to `path`, or -1 with
// errno set by socket(2) or connect(2).
int ConnectUnix(const std::string& path);

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_UNIX_SOCKET_H_
