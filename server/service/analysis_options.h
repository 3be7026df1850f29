// API options (protobuf) -> the math's option structs, rejecting values the
// enums do not know. Shape-dependent checks live with the math.
#ifndef ATTNROLL_SERVER_SERVICE_ANALYSIS_OPTIONS_H_
#define ATTNROLL_SERVER_SERVICE_ANALYSIS_OPTIONS_H_

#include "absl/status/statusor.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/analysis/rollout.h"

namespace attnroll::service {

absl::StatusOr<analysis::RolloutSpec> ToRolloutSpec(const v1::RolloutOptions& options,
                                                    const v1::Layout& layout);

// Attention flow runs on the graph rollout builds: the same fusion, residual,
// range and read-out (no per-layer output, gradients, pruning or NONE fusion).
absl::StatusOr<analysis::RolloutSpec> ToFlowGraphSpec(const v1::FlowOptions& options,
                                                      const v1::Layout& layout);

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_ANALYSIS_OPTIONS_H_
