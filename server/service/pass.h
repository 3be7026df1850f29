// A forward pass as the transport sees it: a header opened it; layer messages
// go in; Finish builds the response. Two kinds: one stack of self-attention
// layers (PassSession) and encoder-decoder stacks (EncoderDecoderSession).
#ifndef ATTNROLL_SERVER_SERVICE_PASS_H_
#define ATTNROLL_SERVER_SERVICE_PASS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/service/config.h"
#include "server/service/worker_pool.h"

namespace attnroll::service {

// How Finish may spread independent work (attention flow's max flows) and
// learn that the call was cancelled. Defaults: serial, never cancelled.
struct FinishContext {
  WorkerPool* pool = nullptr;
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
  // The next layer message: must continue exactly where the last one ended.
  virtual absl::Status AddChunk(const v1::LayerChunk& chunk) = 0;
  // Every layer must have arrived. Builds the response (timing included).
  virtual absl::StatusOr<v1::ExplainResponse> Finish(const FinishContext& ctx) = 0;
};

// Validates the header against the limits and opens the right kind of pass.
// Allocates nothing large: the caller reserves working_bytes() first.
absl::StatusOr<std::unique_ptr<Pass>> CreatePass(const v1::PassHeader& header,
                                                 const PassLimits& limits, int threads);

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_PASS_H_
