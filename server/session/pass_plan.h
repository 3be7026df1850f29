// What a pass's header decides, checked against the server's limits before
// anything is reserved or allocated: a pure function of (header, limits,
// threads), tested on its own. The session built from a plan only takes
// layer chunks.
#ifndef ATTNROLL_SERVER_SESSION_PASS_PLAN_H_
#define ATTNROLL_SERVER_SESSION_PASS_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnroll/v1/pass.pb.h"
#include "server/analysis/rollout.h"
#include "server/runtime/config.h"

namespace attnroll::session {

// One analysis of a single-stack pass.
struct AnalysisPlan {
  std::string name;
  analysis::RolloutSpec spec;
  analysis::RolloutPath path = analysis::RolloutPath::kRow;
  // Attention flow: the sequences keep their At_l (row path) and the max
  // flows run when the pass ends.
  bool flow = false;
  bool all_rows = false;  // flow: every output token
  bool raw = false;       // flow: raw values, not divided by their sum
  // A degenerate result fails the pass instead of being a warning.
  bool fail_on_degenerate = false;
  // Decode and validate only: no state, no maps.
  bool validate_only = false;
};

// A pass of one stack of self-attention layers.
struct PassPlan {
  std::string request_id;
  // num_heads: the heads each layer message brings (1 when the client fused them).
  int num_layers = 0, num_heads = 0, num_tokens = 0, batch = 0;
  // Layout.heads_fused_by_client: the analyses were rewritten for one head.
  bool heads_fused_by_client = false;
  std::vector<int> valid;  // valid length of each sequence (padding cropped)
  bool causal = false;
  float tolerance = 0;     // allowed |row sum - 1|; 0 => the default of each chunk's dtype
  int64_t max_pass_bytes = 0;
  bool needs_gradient = false;  // some analysis is gradient-weighted
  std::vector<AnalysisPlan> analyses;  // never empty: one default rollout
  // Upper bound of the memory the session allocates while it runs.
  int64_t working_bytes = 0;
  // Estimated work units of the pass's attention flow (~ns of one core).
  double flow_cost = 0;
  // Estimated bytes of the response's maps.
  int64_t response_bytes = 0;
};

// `threads`: how many threads may run the pass's attention flow (each
// thread's solver scratch is counted in working_bytes).
absl::StatusOr<PassPlan> PlanPass(const v1::PassHeader& header, const runtime::PassLimits& limits,
                                  int threads = 1);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_PASS_PLAN_H_
