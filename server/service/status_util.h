// The one place where absl::Status (used everywhere below the transport) maps
// to grpc::Status and back.
#ifndef ATTNROLL_SERVER_SERVICE_STATUS_UTIL_H_
#define ATTNROLL_SERVER_SERVICE_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "attnroll/v1/attnroll.pb.h"

namespace attnroll::service {

grpc::Status ToGrpcStatus(const absl::Status& status);
// The in-band error of a multiplexed stream.
v1::PassError ToPassError(const absl::Status& status);
// "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", ...
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_STATUS_UTIL_H_
