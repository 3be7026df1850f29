// One forward pass of a single stack of layers, from its plan to its
// response: validates every layer message (order, head ranges, bytes,
// values), decodes the attention to fp32 and feeds each sequence's analyses.
// Runs on a worker thread; knows nothing of gRPC (what happens to a stream
// message is here).
#ifndef ATTNROLL_SERVER_SESSION_PASS_SESSION_H_
#define ATTNROLL_SERVER_SESSION_PASS_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/analysis/rollout.h"
#include "server/session/pass.h"
#include "server/session/pass_checks.h"
#include "server/session/pass_timing.h"
#include "server/session/pass_plan.h"

namespace attnroll::session {

class PassSession : public Pass {
 public:
  // Allocates the analyses' state: reserve plan.working_bytes first.
  explicit PassSession(PassPlan plan);

  // The buffers every pass of this shape uses besides its analyses' own.
  static int64_t ScratchBytes(const PassPlan& plan);

  const std::string& request_id() const override { return plan_.request_id; }
  int64_t working_bytes() const override { return plan_.working_bytes; }
  const char* kind() const override;
  bool long_finish() const override;

  // The next layer message: must continue exactly where the last one ended.
  absl::Status AddChunk(const v1::LayerChunk& chunk) override;
  void UseHelpers(runtime::WorkerPool* pool, int helpers) override {
    pool_ = pool;
    helpers_ = helpers;
  }

  // Every layer must have arrived. Builds the response (timing included).
  absl::StatusOr<v1::ExplainResponse> Finish(const FinishContext& ctx) override;
  absl::StatusOr<v1::ExplainResponse> Finish() { return Finish(FinishContext()); }

 private:
  struct Job {
    AnalysisPlan plan;
    std::vector<analysis::SequenceRollout> sequences;
  };
  absl::StatusOr<analysis::Maps> FlowMapsOf(Job& job, int index, int b, const FinishContext& ctx);

  absl::Status CheckChunkPosition(const v1::LayerChunk& chunk) const;
  absl::Status TakeResidualWeights(const v1::LayerChunk& chunk);
  absl::Status TakeValueNorms(const v1::LayerChunk& chunk);
  absl::Status AddHeadStrip(const v1::LayerChunk& chunk, int b, int hh, int r0, int rows);
  // Whether this message takes the wire path: every analysis's rows can be
  // fused straight from the received bytes and finished strip by strip.
  bool WirePath() const;
  absl::Status AddWireChunk(const v1::LayerChunk& chunk, bool ends_layer);
  absl::Status AddWireStrip(const v1::LayerChunk& chunk, int b, int r0, int rows, bool ends_layer,
                            analysis::RowStats* stats);

  const PassPlan plan_;
  // Shorthands of plan_'s shape.
  const int num_layers_, num_heads_, num_tokens_, batch_;
  const std::vector<int>& valid_;
  PassBytes bytes_;
  std::vector<Job> jobs_;
  int next_layer_ = 0, next_head_ = 0;
  std::vector<float> block_;  // one decoded strip of rows (fp16/bf16 wire)
  std::vector<float> gblock_;  // the same strip of the gradient
  std::vector<analysis::RowStats> stats_;  // of the strip's rows
  bool value_norms_ = false;               // the pass sends value norms
  std::vector<float> norms_;               // this message's, [B, h, n]
  std::vector<float> layer_residual_;      // this layer's residual weights, [B, n]
  // Gradient-weighted passes: [b][layer] some gradient value of the layer is not 0.
  std::vector<std::vector<bool>> gradient_nonzero_;
  PassTiming timing_;
  runtime::WorkerPool* pool_ = nullptr;
  int helpers_ = 0;
};

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_PASS_SESSION_H_
