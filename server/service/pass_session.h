// One forward pass, from its header to its response: validates the layout and
// every layer message (order, head ranges, bytes, values), decodes the
// attention to fp32 and feeds each sequence's analyses. Runs on a worker
// thread; knows nothing of gRPC (what happens to a stream message is here).
#ifndef ATTNROLL_SERVER_SERVICE_PASS_SESSION_H_
#define ATTNROLL_SERVER_SERVICE_PASS_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/analysis/rollout.h"
#include "server/service/config.h"
#include "server/service/pass.h"
#include "server/service/worker_pool.h"

namespace attnroll::service {

class PassSession : public Pass {
 public:
  // Validates the header against the limits. Allocates nothing large: the
  // caller reserves working_bytes() before the first AddChunk.
  // `threads` is how many threads Finish may use (attention flow's scratch
  // is counted per thread in working_bytes()).
  static absl::StatusOr<std::unique_ptr<PassSession>> Create(const v1::PassHeader& header,
                                                             const PassLimits& limits,
                                                             int threads = 1);

  const std::string& request_id() const override { return request_id_; }
  // Upper bound of the memory this pass allocates while it runs.
  int64_t working_bytes() const override { return working_bytes_; }

  // The next layer message: must continue exactly where the last one ended.
  absl::Status AddChunk(const v1::LayerChunk& chunk) override;

  // Every layer must have arrived. Builds the response (timing included).
  absl::StatusOr<v1::ExplainResponse> Finish(const FinishContext& ctx) override;
  absl::StatusOr<v1::ExplainResponse> Finish() { return Finish(FinishContext()); }

 private:
  struct Job {
    std::string name;
    analysis::RolloutSpec spec;
    analysis::RolloutPath path;
    std::vector<analysis::SequenceRollout> sequences;
    // Attention flow: the sequences keep their At_l (row path) and Finish
    // runs the max flows on them.
    bool flow = false;
    bool all_rows = false;
    bool raw = false;
  };
  absl::StatusOr<analysis::Maps> FlowMapsOf(Job& job, int index, int b, const FinishContext& ctx);

  PassSession() = default;
  absl::Status CheckChunkPosition(const v1::LayerChunk& chunk) const;
  absl::Status CheckGradient(const v1::LayerChunk& chunk) const;
  absl::Status TakeResidualWeights(const v1::LayerChunk& chunk);
  absl::Status TakeValueNorms(const v1::LayerChunk& chunk);
  absl::Status AddHeadStrip(const v1::LayerChunk& chunk, int b, int hh, int r0, int rows);

  std::string request_id_;
  int num_layers_ = 0, num_heads_ = 0, num_tokens_ = 0, batch_ = 0;
  std::vector<int> valid_;
  bool causal_ = false;
  float tolerance_ = 0;  // 0 => default for each chunk's dtype
  int64_t max_pass_bytes_ = 0;
  int64_t bytes_received_ = 0;
  int64_t working_bytes_ = 0;
  std::vector<Job> jobs_;
  int next_layer_ = 0, next_head_ = 0;
  bool needs_gradient_ = false;  // some analysis is gradient-weighted
  std::vector<float> block_;  // one decoded strip of rows (fp16/bf16 wire)
  std::vector<float> gblock_;  // the same strip of the gradient
  std::vector<analysis::RowStats> stats_;  // of the strip's rows
  bool value_norms_ = false;               // the pass sends value norms
  std::vector<float> norms_;               // this message's, [B, h, n]
  std::vector<float> layer_residual_;      // this layer's residual weights, [B, n]
  absl::Time started_;
  absl::Duration compute_;
};

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_PASS_SESSION_H_
