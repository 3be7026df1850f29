// Compare RPC: request tensors -> maps -> analysis::CompareMaps -> response.
// Runs on a worker thread; knows nothing of gRPC.
#ifndef ATTNROLL_SERVER_SERVICE_COMPARE_REQUEST_H_
#define ATTNROLL_SERVER_SERVICE_COMPARE_REQUEST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "attnroll/v1/audit.pb.h"
#include "server/service/config.h"

namespace attnroll::service {

// Validates the request (shapes, dtype, byte counts, options) and returns an
// upper bound of the working memory Compare will use.
absl::StatusOr<int64_t> CompareWorkingBytes(const v1::CompareRequest& request,
                                            const PassLimits& limits);

absl::StatusOr<v1::CompareResponse> RunCompare(const v1::CompareRequest& request,
                                               const PassLimits& limits);

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_COMPARE_REQUEST_H_
