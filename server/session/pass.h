// A forward pass as the transport sees it: planned from its header, started
// once its memory is reserved, then layer messages go in and Finish builds
// the response. Two kinds: one stack of self-attention layers (PassSession)
// and encoder-decoder stacks (EncoderDecoderSession).
#ifndef ATTNROLL_SERVER_SESSION_PASS_H_
#define ATTNROLL_SERVER_SESSION_PASS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>

#include "absl/status/statusor.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/runtime/config.h"
#include "server/runtime/worker_pool.h"
#include "server/session/encoder_decoder_plan.h"
#include "server/session/pass_plan.h"

namespace attnroll::session {

// How Finish may spread independent work (attention flow's max flows) and
// learn that the call was cancelled. Defaults: serial, never cancelled.
struct FinishContext {
  runtime::WorkerPool* pool = nullptr;
  int helpers = 0;  // pool workers that may join the calling one
  std::function<bool()> cancelled;
  // Called (from any worker, serialised) as long analyses advance: analysis
  // index, items done, items in all. At most ~100 calls per analysis.
  std::function<void(int analysis, int64_t done, int64_t total)> progress;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual const std::string& request_id() const = 0;
  // Upper bound of the memory this pass allocates while it runs.
  virtual int64_t working_bytes() const = 0;
  // What it computes, for the metrics: "rollout", "grad-rollout", "flow",
  // "encoder-decoder", "validate" (its first analysis).
  virtual const char* kind() const = 0;
  // Its Finish is long work (attention flow's max flows): it runs on the
  // pool's long lane.
  virtual bool long_finish() const = 0;
  // The next layer message: must continue exactly where the last one ended.
  virtual absl::Status AddChunk(const v1::LayerChunk& chunk) = 0;
  // Idle workers of `pool` (at most `helpers` at once) may take part in a
  // large layer message (runtime::ParallelFor: they leave as soon as other
  // work waits). Without it a pass runs on the calling thread alone.
  virtual void UseHelpers(runtime::WorkerPool* pool, int helpers) {}
  // Every layer must have arrived. Builds the response (timing included).
  virtual absl::StatusOr<v1::ExplainResponse> Finish(const FinishContext& ctx) = 0;
};

// The plan of either kind of pass.
class PlannedPass {
 public:
  explicit PlannedPass(std::variant<PassPlan, EncoderDecoderPlan> plan) : plan_(std::move(plan)) {}
  // What the pass will allocate: reserve it before Start().
  int64_t working_bytes() const;
  // Allocates the pass's state.
  std::unique_ptr<Pass> Start() &&;

 private:
  std::variant<PassPlan, EncoderDecoderPlan> plan_;
};

// Validates the header against the limits and plans the right kind of pass.
// Allocates nothing large. `threads`: how many threads Finish may use.
absl::StatusOr<PlannedPass> PlanFromHeader(const v1::PassHeader& header,
                                           const runtime::PassLimits& limits, int threads);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_PASS_H_
