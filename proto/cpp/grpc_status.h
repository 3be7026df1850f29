// The one place where absl::Status (used everywhere below the transport and
// in the client library's API) and grpc::Status meet. Shared by the server's
// rpc room and the C++ client.
#ifndef ATTNROLL_PROTO_CPP_GRPC_STATUS_H_
#define ATTNROLL_PROTO_CPP_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace attnroll {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace attnroll

#endif  // ATTNROLL_PROTO_CPP_GRPC_STATUS_H_
