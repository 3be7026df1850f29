// Compare RPC: request tensors -> maps -> analysis::CompareMaps -> response.
// Runs on a worker thread; knows nothing of gRPC.
#ifndef ATTNROLL_SERVER_SESSION_COMPARE_REQUEST_H_
#define ATTNROLL_SERVER_SESSION_COMPARE_REQUEST_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include <vector>

#include "attnroll/v1/audit.pb.h"
#include "server/analysis/compare.h"
#include "server/runtime/config.h"

namespace attnroll::session {

// Validates the request (shapes, dtype, byte counts, options) and returns an
// upper bound of the working memory Compare will use.
absl::StatusOr<int64_t> CompareWorkingBytes(const v1::CompareRequest& request,
                                            const runtime::PassLimits& limits);

// `cancelled` (may be empty) stops the comparison between metrics and maps.
absl::StatusOr<v1::CompareResponse> RunCompare(const v1::CompareRequest& request,
                                               const runtime::PassLimits& limits,
                                               const std::function<bool()>& cancelled = {});

// The estimated work of comparing `maps` pairs of maps of `length` values:
// RESOURCE_EXHAUSTED (refusal "limits") above limits.max_compare_cost.
absl::Status CheckCompareCost(int64_t maps, int64_t length, const analysis::CompareSpec& spec,
                              const runtime::PassLimits& limits);

// Pieces the audit shares with Compare.
// CompareOptions -> spec for maps of `length` values laid out on the options' grid.
absl::StatusOr<analysis::CompareSpec> ToCompareSpec(const v1::CompareOptions& options,
                                                    int64_t length);
// Every metric; the difference map (shaped map_shape) only when asked for.
void ToProto(const analysis::Comparison& c, const std::vector<int64_t>& map_shape,
             bool with_difference, v1::Comparison* out);


}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_COMPARE_REQUEST_H_
