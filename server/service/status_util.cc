#include "server/service/status_util.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace attnroll::service {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

v1::PassError ToPassError(const absl::Status& status) {
  v1::PassError error;
  error.set_code(static_cast<int>(status.code()));
  error.set_code_name(StatusCodeName(static_cast<grpc::StatusCode>(status.code())));
  error.set_message(std::string(status.message()));
  return error;
}

absl::Status CheckCount(absl::string_view field, uint64_t value, uint64_t limit) {
  if (value < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": expected 1 <= value <= ", limit, ", got ", value));
  }
  if (value > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat(field, ": ", value, " exceeds the server limit of ", limit));
  }
  return absl::OkStatus();
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

}  // namespace attnroll::service
