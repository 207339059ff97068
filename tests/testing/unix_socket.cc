#include "testing/unix_socket.h"

#include "structd/base/posix.h"

namespace structd::testing {

int ConnectUnix(const std::string& path) { return base::ConnectUnix(path).release(); }

}  // namespace structd::testing
