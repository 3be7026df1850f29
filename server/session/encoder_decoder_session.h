// An encoder-decoder pass (Layout.encoder_decoder): validates and decodes the
// layers of the three stacks in their order and feeds every sequence's
// EncoderDecoderRelevance. What happens to its messages is here.
#ifndef ATTNROLL_SERVER_SESSION_ENCODER_DECODER_SESSION_H_
#define ATTNROLL_SERVER_SESSION_ENCODER_DECODER_SESSION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/analysis/encoder_decoder.h"
#include "server/analysis/readout.h"
#include "server/session/encoder_decoder_plan.h"
#include "server/session/pass.h"
#include "server/session/pass_checks.h"
#include "server/session/pass_timing.h"

namespace attnroll::session {

class EncoderDecoderSession : public Pass {
 public:
  // Allocates every sequence's relevance state: reserve plan.working_bytes first.
  explicit EncoderDecoderSession(EncoderDecoderPlan plan);

  const std::string& request_id() const override { return plan_.request_id; }
  int64_t working_bytes() const override { return plan_.working_bytes; }
  const char* kind() const override { return "encoder-decoder"; }
  bool long_finish() const override { return false; }
  absl::Status AddChunk(const v1::LayerChunk& chunk) override;
  absl::StatusOr<v1::ExplainResponse> Finish(const FinishContext& ctx) override;

 private:
  struct Job {
    EncoderDecoderAnalysisPlan plan;
    std::vector<analysis::EncoderDecoderRelevance> sequences;
  };
  // Where the next message must be: stack, layer within it.
  struct Position {
    analysis::Stack stack;
    int layer;
  };

  Position Expected() const;
  int positions() const { return plan_.encoder_layers + 2 * plan_.decoder_layers; }

  const EncoderDecoderPlan plan_;
  PassBytes bytes_;
  int next_ = 0, next_head_ = 0;  // position index, head within it
  std::vector<Job> jobs_;
  // Whether each stack (encoder, decoder self, cross) sends value norms: its
  // first message decides, the rest must follow (-1: not seen yet).
  int value_norms_[3] = {-1, -1, -1};
  std::vector<float> layer_residual_;  // this layer's residual weights, [B, rows]
  std::vector<float> block_, gblock_;
  std::vector<analysis::RowStats> stats_;
  PassTiming timing_;
};

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_ENCODER_DECODER_SESSION_H_
