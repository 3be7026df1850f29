// What an encoder-decoder pass's header decides (Layout.encoder_decoder),
// checked against the limits before anything is reserved: a pure function of
// (header, limits), like PlanPass for single-stack passes.
#ifndef ATTNROLL_SERVER_SESSION_ENCODER_DECODER_PLAN_H_
#define ATTNROLL_SERVER_SESSION_ENCODER_DECODER_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnroll/v1/pass.pb.h"
#include "server/analysis/encoder_decoder.h"
#include "server/analysis/readout.h"
#include "server/runtime/config.h"

namespace attnroll::session {

struct EncoderDecoderAnalysisPlan {
  std::string name;
  analysis::EncoderDecoderSpec spec;
  analysis::ReadoutSpec readout;  // on the encoder axis; rows index decoder tokens
  bool all_rows = false;          // no rows asked for: every decoder token
  bool return_encoder = false, return_decoder = false;
};

struct EncoderDecoderPlan {
  std::string request_id;
  int num_heads = 0, batch = 0;
  int encoder_layers = 0, decoder_layers = 0, n_enc = 0, n_dec = 0;
  // Valid encoder and decoder length of each sequence (padding cropped).
  std::vector<int> valid_enc, valid_dec;
  bool causal = false;  // the decoder's self-attention is causal
  bool needs_gradient = false;
  float tolerance = 0;
  int64_t max_pass_bytes = 0;
  std::vector<EncoderDecoderAnalysisPlan> analyses;
  int64_t working_bytes = 0;
};

absl::StatusOr<EncoderDecoderPlan> PlanEncoderDecoderPass(const v1::PassHeader& header,
                                                          const runtime::PassLimits& limits);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_ENCODER_DECODER_PLAN_H_
