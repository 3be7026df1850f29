// The attention (and its side inputs) as the CLI reads them, never guessed:
//   - one .npy array [L, H, n, n]; a 5-D array only with its layout given:
//     [B, L, H, n, n] (--layout blhnn) or [L, B, H, n, n] (--layout lbhnn,
//     what torch.stack of per-layer [B, H, n, n] tensors gives);
//   - the per-layer arrays of a capture loop: a .npz archive
//     (np.savez(f, *attentions)) or a directory of per-layer .npy files, each
//     [H, n, n] or [B, H, n, n].
// Everything comes back as [B, L, H, rows, cols] (rows == cols except for
// cross-attention). Side inputs (gradients, residual weights, value norms)
// follow the attention's form and layout.
#ifndef ATTNROLL_CLIENT_CLI_ATTENTION_INPUT_H_
#define ATTNROLL_CLIENT_CLI_ATTENTION_INPUT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/npy/npy.h"

namespace attnroll::cli {

// The order of the leading axes of a 5-D array (and of the side inputs).
enum class InputLayout { kUnset, kBatchFirst /* blhnn */, kLayerFirst /* lbhnn */ };

// "blhnn" | "lbhnn"; false for anything else.
bool ParseInputLayout(const std::string& name, InputLayout* out);

struct AttentionInput {
  npy::Array array;  // [B, L, H, rows, cols]; its values are empty when `mapped` holds them
  // A float32 .npy file mapped read-only and used in place (mapping keeps it).
  const float* mapped = nullptr;
  std::shared_ptr<const void> mapping;
  // The values, [B, L, H, rows, cols] row-major.
  const float* values() const { return mapped != nullptr ? mapped : array.values.data(); }
  int64_t batch = 1, layers = 0, heads = 0, rows = 0, cols = 0;
  bool batched = false;  // the input had a batch axis (the maps keep one)
  bool per_layer_files = false;  // read from a .npz archive or a directory
  // How it was read, for the summary: "L=12 H=12 n=197 B=1 (one array [12, 12, 197, 197])".
  std::string summary;
};

// `what` names the input in messages ("--attention"). `square`: rows == cols.
absl::StatusOr<AttentionInput> ReadAttentionInput(const std::string& path, InputLayout layout,
                                                  const std::string& what, bool square = true);

// A gradient: the attention's form, layout and shape.
absl::StatusOr<npy::Array> ReadGradientInput(const std::string& path, InputLayout layout,
                                             const std::string& what, const AttentionInput& attention);

// A side input whose trailing axes per sequence and layer are one of `shapes`
// (e.g. {} or {n} for residual weights, {H, n} for value norms), in either
// form whatever the attention's: one array [L, ...] ([B, L, ...] / [L, B, ...]
// by the layout when the attention is batched), or one array per layer
// ([...] / [B, ...]) in a .npz or a directory.
// Returned as [B, L, ...]; `*matched` gets the index of the shape that fit.
absl::StatusOr<npy::Array> ReadSideInput(const std::string& path, InputLayout layout,
                                         const std::string& what, const AttentionInput& attention,
                                         const std::vector<std::vector<int64_t>>& shapes,
                                         int* matched = nullptr);

}  // namespace attnroll::cli

#endif  // ATTNROLL_CLIENT_CLI_ATTENTION_INPUT_H_
