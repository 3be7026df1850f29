// The one place where absl::Status (used everywhere below the transport) maps
// to grpc::Status and back.
#ifndef ATTNROLL_SERVER_SERVICE_STATUS_UTIL_H_
#define ATTNROLL_SERVER_SERVICE_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "attnroll/v1/attnroll.pb.h"

namespace attnroll::service {

grpc::Status ToGrpcStatus(const absl::Status& status);
// The in-band error of a multiplexed stream.
v1::PassError ToPassError(const absl::Status& status);
// A count a client declares (layers, heads, tokens, batch): INVALID_ARGUMENT
// when 0, RESOURCE_EXHAUSTED above the server's limit; messages name `field`.
absl::Status CheckCount(absl::string_view field, uint64_t value, uint64_t limit);

// "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", ...
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_STATUS_UTIL_H_
