// Relevance through an encoder-decoder (or two encoders joined by
// cross-attention, CLIP-style) transformer. Conventions: docs/conventions.md,
// "Encoder-decoder relevance".
//
// Layers arrive in this order: encoder self-attention 0..Le-1, then for each
// decoder layer k its self-attention and then its cross-attention (decoder
// queries x encoder keys, n_d x n_e). Two compositions:
//
// kRules (Chefer et al. ICCV 2021, rules 6-10; needs gradients):
//   Ab = mean_h(max(0, G * A)) for every layer (fusion may be changed)
//   R_ee = I, R_ee += Ab R_ee                     encoder self-attention
//   R_dd = I, R_de = 0
//   R_dd += Ab R_dd, R_de += Ab R_de              decoder self-attention
//   R_de += Rbar_dd^T Ab_cross Rbar_ee            cross-attention
//   Rbar = (R - I) / rowsum(R - I) + I, rows with sum 0 giving 0 (0/0 := 0).
// kRollout (attention only):
//   R_ee, R_dd: ordinary rollout of the encoder / decoder self-attention
//   (fusion, residual a or per-row weights, renormalisation as rollout), Abar_cross_last the
//   fused cross-attention of the last decoder layer, and
//   R_de = R_dd^T (Abar_cross_last R_ee).
#ifndef ATTNROLL_SERVER_ANALYSIS_ENCODER_DECODER_H_
#define ATTNROLL_SERVER_ANALYSIS_ENCODER_DECODER_H_

#include <vector>

#include "absl/status/status.h"
#include "server/analysis/head_fusion.h"
#include "server/analysis/types.h"

namespace attnroll::analysis {

enum class Stack { kEncoder, kDecoderSelf, kDecoderCross };

struct EncoderDecoderSpec {
  bool rules = true;  // false: the attention-only rollout composition
  Fusion fusion = Fusion::kMean;
  std::vector<float> head_weights;
  float residual = 0.5f;      // rollout composition
  bool renormalize = true;    // rollout composition
  // The decoder's self-attention is causal: its fused matrix is made exactly
  // lower-triangular (the tolerated mass above the diagonal dropped) before
  // the identity or the residual is added, as in rollout.
  bool causal = false;
};

absl::Status ValidateEncoderDecoderSpec(const EncoderDecoderSpec& spec, int num_heads);

// Bytes a EncoderDecoderRelevance for these sizes allocates (upper bound).
int64_t EncoderDecoderWorkingBytes(int n_enc, int n_dec);

class EncoderDecoderRelevance {
 public:
  EncoderDecoderRelevance(const EncoderDecoderSpec& spec, int num_heads, int decoder_layers,
                          int n_enc, int n_dec);

  // One head of one layer of `stack` (rows x cols as the stack says); heads
  // 0..H-1 in order; `gradient` required for kRules. EndLayer after the last.
  void AddHead(Stack stack, int head, const ConstMatrixView& a, const ConstMatrixView* gradient);
  // `residual_weights` (one per query row, may be null): the rollout
  // composition's residual weight of each row of a self-attention layer,
  // replacing spec.residual (the rules composition has no residual).
  void EndLayer(Stack stack, int layer, const float* residual_weights = nullptr);

  // After every layer: R_de (n_d x n_e), R_ee, R_dd.
  const MatrixF& decoder_encoder() const { return r_de_; }
  const MatrixF& encoder() const { return r_ee_; }
  const MatrixF& decoder() const { return r_dd_; }

 private:
  HeadFuser& FuserFor(Stack stack);
  void FoldSelf(HeadFuser& fuser, bool causal, const float* residual_weights, MatrixF& r,
                MatrixF* also);

  EncoderDecoderSpec spec_;
  int decoder_layers_;
  int n_enc_, n_dec_;
  HeadFuser enc_, dec_, cross_;
  MatrixF r_ee_, r_dd_, r_de_, cross_last_, scratch_;
};

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_ENCODER_DECODER_H_
