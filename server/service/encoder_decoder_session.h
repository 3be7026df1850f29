// An encoder-decoder pass (Layout.encoder_decoder): validates and decodes the
// layers of the three stacks in their order and feeds every sequence's
// EncoderDecoderRelevance. What happens to its messages is here.
#ifndef ATTNROLL_SERVER_SERVICE_ENCODER_DECODER_SESSION_H_
#define ATTNROLL_SERVER_SERVICE_ENCODER_DECODER_SESSION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/analysis/encoder_decoder.h"
#include "server/analysis/readout.h"
#include "server/service/pass.h"

namespace attnroll::service {

class EncoderDecoderSession : public Pass {
 public:
  static absl::StatusOr<std::unique_ptr<EncoderDecoderSession>> Create(
      const v1::PassHeader& header, const PassLimits& limits);

  const std::string& request_id() const override { return request_id_; }
  int64_t working_bytes() const override { return working_bytes_; }
  absl::Status AddChunk(const v1::LayerChunk& chunk) override;
  absl::StatusOr<v1::ExplainResponse> Finish(const FinishContext& ctx) override;

 private:
  struct Job {
    std::string name;
    analysis::EncoderDecoderSpec spec;
    analysis::ReadoutSpec readout;  // on the encoder axis; rows index decoder tokens
    bool all_rows = false;
    bool return_encoder = false, return_decoder = false;
    std::vector<analysis::EncoderDecoderRelevance> sequences;
  };
  // Where the next message must be: stack, layer within it, first head.
  struct Position {
    analysis::Stack stack;
    int layer;
  };

  EncoderDecoderSession() = default;
  Position Expected() const;
  int positions() const { return encoder_layers_ + 2 * decoder_layers_; }

  std::string request_id_;
  int num_heads_ = 0, batch_ = 0;
  int encoder_layers_ = 0, decoder_layers_ = 0, n_enc_ = 0, n_dec_ = 0;
  bool causal_ = false;
  bool needs_gradient_ = false;
  float tolerance_ = 0;
  int64_t max_pass_bytes_ = 0, bytes_received_ = 0, working_bytes_ = 0;
  int next_ = 0, next_head_ = 0;  // position index, head within it
  std::vector<Job> jobs_;
  std::vector<float> block_, gblock_;
  std::vector<analysis::RowStats> stats_;
  absl::Time started_;
  absl::Duration compute_;
};

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_ENCODER_DECODER_SESSION_H_
