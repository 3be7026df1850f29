// API options (protobuf) -> the math's option structs, rejecting values the
// enums do not know. Shape-dependent checks live with the math.
#ifndef ATTNROLL_SERVER_SESSION_ANALYSIS_OPTIONS_H_
#define ATTNROLL_SERVER_SESSION_ANALYSIS_OPTIONS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnroll/v1/analysis.pb.h"
#include "attnroll/v1/pass.pb.h"
#include "server/analysis/rollout.h"

namespace attnroll::session {

// `root` names the options in messages ("rollout", "flow", "encoder_decoder"):
// "rollout.fusion: expected ...". At most `max_rows` distinct read-out rows.
absl::StatusOr<analysis::RolloutSpec> ToRolloutSpec(const v1::RolloutOptions& options,
                                                    const v1::Layout& layout,
                                                    absl::string_view root = "rollout",
                                                    int max_rows = 1 << 30);

// Attention flow runs on the graph rollout builds: the same fusion, residual,
// range and read-out (no per-layer output, gradients, pruning or NONE fusion).
absl::StatusOr<analysis::RolloutSpec> ToFlowGraphSpec(const v1::FlowOptions& options,
                                                      const v1::Layout& layout,
                                                      int max_rows = 1 << 30);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_ANALYSIS_OPTIONS_H_
