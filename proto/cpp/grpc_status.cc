#include "proto/cpp/grpc_status.h"

#include <string>

namespace attnroll {
namespace {

// absl and gRPC both use the canonical google.rpc.Code numbering; the casts
// below rely on it, so every code is checked here at compile time.
#define ATTNROLL_SAME_CODE(absl_name, grpc_name)                   \
  static_assert(static_cast<int>(absl::StatusCode::absl_name) ==   \
                    static_cast<int>(grpc::StatusCode::grpc_name), \
                #absl_name " and " #grpc_name " must have the same number")
ATTNROLL_SAME_CODE(kOk, OK);
ATTNROLL_SAME_CODE(kCancelled, CANCELLED);
ATTNROLL_SAME_CODE(kUnknown, UNKNOWN);
ATTNROLL_SAME_CODE(kInvalidArgument, INVALID_ARGUMENT);
ATTNROLL_SAME_CODE(kDeadlineExceeded, DEADLINE_EXCEEDED);
ATTNROLL_SAME_CODE(kNotFound, NOT_FOUND);
ATTNROLL_SAME_CODE(kAlreadyExists, ALREADY_EXISTS);
ATTNROLL_SAME_CODE(kPermissionDenied, PERMISSION_DENIED);
ATTNROLL_SAME_CODE(kResourceExhausted, RESOURCE_EXHAUSTED);
ATTNROLL_SAME_CODE(kFailedPrecondition, FAILED_PRECONDITION);
ATTNROLL_SAME_CODE(kAborted, ABORTED);
ATTNROLL_SAME_CODE(kOutOfRange, OUT_OF_RANGE);
ATTNROLL_SAME_CODE(kUnimplemented, UNIMPLEMENTED);
ATTNROLL_SAME_CODE(kInternal, INTERNAL);
ATTNROLL_SAME_CODE(kUnavailable, UNAVAILABLE);
ATTNROLL_SAME_CODE(kDataLoss, DATA_LOSS);
ATTNROLL_SAME_CODE(kUnauthenticated, UNAUTHENTICATED);
#undef ATTNROLL_SAME_CODE

constexpr int kLastCode = static_cast<int>(absl::StatusCode::kUnauthenticated);

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  return grpc::Status(code <= kLastCode ? static_cast<grpc::StatusCode>(code) : grpc::StatusCode::UNKNOWN,
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  return absl::Status(code >= 0 && code <= kLastCode ? static_cast<absl::StatusCode>(code)
                                                     : absl::StatusCode::kUnknown,
                      status.error_message());
}

}  // namespace attnroll
