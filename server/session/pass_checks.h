// Checks that every kind of pass (one stack, or encoder-decoder stacks)
// applies to its header and to each layer chunk, written once.
#ifndef ATTNROLL_SERVER_SESSION_PASS_CHECKS_H_
#define ATTNROLL_SERVER_SESSION_PASS_CHECKS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnroll/v1/pass.pb.h"

namespace attnroll::session {

// header.row_sum_tolerance, checked: 0 <= t < 1 (0 => per-dtype default).
absl::StatusOr<float> RowSumTolerance(const v1::PassHeader& header);

// The smallest wire dtype is 2 bytes: a pass of `values` attention values
// that cannot fit max_pass_bytes even so is refused before it starts.
absl::Status CheckPassFits(uint64_t values, int64_t max_pass_bytes, absl::string_view shape);

// A chunk's attention tensor: known dtype, bytes matching the shape, and the
// shape [batch, h, rows, cols] with 1 <= h <= the heads left of the layer
// (heads next_head..num_heads-1).
absl::Status CheckAttentionTensor(const v1::Tensor& attention, absl::string_view field, int batch,
                                  int next_head, int num_heads, int rows, int cols);

// The chunk's gradient: present exactly when `needed` (`why` says what needs
// it), with the attention's shape.
absl::Status CheckGradientTensor(const v1::LayerChunk& chunk, absl::string_view field, bool needed,
                                 absl::string_view why);

// LayerChunk.residual_weights of a layer: [batch] (one weight per sequence)
// or [batch, n] (one per query token), each in [0, 1] over the valid tokens
// (`valid[b]`). Returns them as [batch, n] (padding 0). `field` names the
// tensor; they must come on the layer's first message (`head_start` 0).
absl::StatusOr<std::vector<float>> ResidualWeightsOf(const v1::Tensor& weights, absl::string_view field,
                                                     int batch, int n, const std::vector<int>& valid,
                                                     int head_start);

// LayerChunk.value_norms of a chunk of `heads` heads starting at `head0`:
// [batch, heads, n] (n keys), finite and >= 0 over the valid keys.
absl::StatusOr<std::vector<float>> ValueNormsOf(const v1::Tensor& norms, absl::string_view field,
                                                int batch, int heads, int head0, int n,
                                                const std::vector<int>& valid);

// Attention (and gradient) bytes streamed so far, against max_pass_bytes.
class PassBytes {
 public:
  explicit PassBytes(int64_t limit) : limit_(limit) {}
  absl::Status Add(const v1::LayerChunk& chunk);

 private:
  int64_t limit_;
  int64_t received_ = 0;
};

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_PASS_CHECKS_H_
