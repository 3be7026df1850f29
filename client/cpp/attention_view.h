// What the client sends: views of float32 attention arrays in the caller's
// memory (nothing is copied until a message is encoded).
#ifndef ATTNROLL_CLIENT_CPP_ATTENTION_VIEW_H_
#define ATTNROLL_CLIENT_CPP_ATTENTION_VIEW_H_

#include <cstdint>

namespace attnroll::client {

// A float32 array [batch, layers, heads, tokens, tokens], row-major, and
// optionally its gradient (same shape) for gradient-weighted rollout.
struct AttentionView {
  const float* data = nullptr;
  int64_t batch = 1, layers = 0, heads = 0, tokens = 0;
  const float* gradient = nullptr;
  // Residual weights: [batch, layers] or, with residual_per_token,
  // [batch, layers, tokens]. Value norms: [batch, layers, heads, tokens].
  const float* residual_weights = nullptr;
  bool residual_per_token = false;
  const float* value_norms = nullptr;
  // Rows of each matrix when they differ from `tokens` (cross-attention:
  // decoder queries x encoder keys); 0 = tokens.
  int64_t query_tokens = 0;
  int64_t rows() const { return query_tokens > 0 ? query_tokens : tokens; }
};

// The three stacks of an encoder-decoder pass ([L, H, n, n] each, or [B, ...]):
// encoder self-attention [Le, H, n_enc, n_enc], decoder self-attention
// [Ld, H, n_dec, n_dec], cross-attention [Ld, H, n_dec, n_enc] (query_tokens
// = n_dec). Gradients in each view's `gradient` for the RULES composition.
struct EncoderDecoderView {
  AttentionView encoder, decoder, cross;
};

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_ATTENTION_VIEW_H_
