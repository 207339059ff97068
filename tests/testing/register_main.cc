// structd_test_register: attaches, joins CHANNEL, registers each KEY with
// the fields "v:u64,w:u64" — except the key "clash", whose w field has
// FIELD_TYPE — and prints "KEY TOKEN" (or "KEY ERROR CODE") per line.
//
//   structd_test_register TARGET CHANNEL CAPABILITY FIELD_TYPE KEY...
#include <cstdio>
#include <string>

#include "testing/grpc_client.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s TARGET CHANNEL CAPABILITY FIELD_TYPE KEY...\n",
                 argv[0]);
    return 2;
  }
  structd::testing::GrpcClient c(argv[1]);
  structd::v1::JoinChannelResponse joined;
  if (!c.Join(argv[2], argv[3], &joined)) return 3;
  for (int i = 5; i < argc; ++i) {
    structd::v1::RegisterTypeRequest req;
    req.set_channel(argv[2]);
    req.set_key(argv[i]);
    auto* v = req.add_fields();
    v->set_name("v");
    v->set_type("u64");
    auto* w = req.add_fields();
    w->set_name("w");
    w->set_type(std::string(argv[i]) == "clash" ? argv[4] : "u64");
    structd::v1::RegisterTypeResponse resp;
    grpc::Status s = c.registry().RegisterType(c.Ctx().get(), req, &resp);
    if (!s.ok()) {
      std::printf("%s ERROR %d\n", argv[i], static_cast<int>(s.error_code()));
    } else {
      std::printf("%s %s\n", argv[i], resp.type().token().c_str());
    }
  }
  return 0;
}
