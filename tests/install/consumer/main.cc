// Uses the installed client library: a typed struct (compile-time offsets
// checked against shm::Layout), a field wait (links the shm library's
// futex code) and a connection attempt (links gRPC).
#include <cstdio>

#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/client/port.h"  // and the shm headers it needs (field_watch.h, port_ring.h)

#define POINT_FIELDS(F) F(x, f64) F(y, f64) F(label, string(8))
STRUCTD_STRUCT(Point, POINT_FIELDS);

int main(int argc, char** argv) {
  auto layout = structd::shm::Layout::Compute(Point::FieldSpecs());
  if (!layout.ok() || layout->fields()[2].offset != Point::kOffsets[2]) return 1;
  alignas(8) double value = 2.0;
  auto changed = structd::shm::Scalar<double>(&value).WaitChanged(1.0, std::chrono::seconds(0));
  if (!changed.ok() || *changed != 2.0) return 3;
  structd::client::ClientOptions options;
  options.socket = argc > 1 ? argv[1] : "/nonexistent/structd.sock";
  auto client = structd::client::Client::Connect(options);
  if (client.ok() || client.status().code() != absl::StatusCode::kUnavailable) return 2;
  std::printf("consumer ok: layout %u bytes; %s\n", layout->size(),
              std::string(client.status().message()).c_str());
  return 0;
}
