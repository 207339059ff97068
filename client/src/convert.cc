#include "client/src/convert.h"

#include "absl/strings/str_cat.h"

namespace structd::client::internal {

absl::StatusOr<TypeInfo> TypeInfoFromProto(const v1::TypeInfo& in) {
  TypeInfo out;
  out.key = in.key();
  std::optional<shm::TypeToken> token = shm::TypeToken::FromHex(in.token());
  if (!token) {
    return absl::InternalError(absl::StrCat("daemon sent a malformed token '", in.token(), "'"));
  }
  out.token = *token;
  out.type_index = in.type_index();
  std::vector<shm::FieldSpec> specs;
  for (const v1::Field& f : in.layout().fields()) {
    shm::FieldSpec spec;
    spec.name = f.name();
    if (absl::Status s = shm::ParseFieldType(f.type(), spec); !s.ok()) return s;
    specs.push_back(std::move(spec));
  }
  // The daemon accepted it under its own limits (and its built-in types
  // under none): rebuilt here to check it, not to judge it again.
  absl::StatusOr<shm::Layout> layout =
      shm::Layout::Compute(std::move(specs), shm::LayoutLimits::None());
  if (!layout.ok()) return layout.status();
  out.layout = std::move(*layout);
  return out;
}

PortInfo PortInfoFromProto(const v1::PortInfo& in) {
  return PortInfo{in.name(),     Ref::FromBits(in.ref()), in.capacity(),
                  in.depth(),    in.sent(),               in.received(),
                  in.receivers_waiting(), in.senders_waiting()};
}

}  // namespace structd::client::internal
