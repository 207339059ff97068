#ifndef STRUCTD_CLIENT_SRC_CONVERT_H_
#define STRUCTD_CLIENT_SRC_CONVERT_H_

// Wire types -> the library's plain types.

#include "absl/status/statusor.h"
#include "structd/client/channel.h"
#include "structd/v1/common.pb.h"

namespace structd::client::internal {

// Rebuilds the layout from the field types (and so checks it).
absl::StatusOr<TypeInfo> TypeInfoFromProto(const v1::TypeInfo& in);

PortInfo PortInfoFromProto(const v1::PortInfo& in);

}  // namespace structd::client::internal

#endif  // STRUCTD_CLIENT_SRC_CONVERT_H_
