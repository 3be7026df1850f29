// Fuses the H heads of one layer into one matrix, a strip of rows of one head
// at a time, so a layer split into head ranges over several messages is never
// held whole and each strip of the fused matrix stays in cache while every
// head of a message is added to it.
#ifndef ATTNROLL_SERVER_ANALYSIS_HEAD_FUSION_H_
#define ATTNROLL_SERVER_ANALYSIS_HEAD_FUSION_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#include "server/analysis/buffers.h"
#include "server/analysis/fuse_kernels.h"
#include "server/analysis/row_stats.h"
#include "server/analysis/types.h"

namespace attnroll::analysis {

class HeadFuser {
 public:
  // `weights` is used by Fusion::kWeighted only (one per head). With a
  // gradient rule, each head contributes max(0, G * A) (Chefer) or G * A
  // (vit-explain: the caller clamps the fused matrix at 0) instead of A.
  HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int size,
            GradientRule gradient = GradientRule::kNone);
  // A rows x cols layer (cross-attention: decoder queries x encoder keys).
  HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int rows, int cols,
            GradientRule gradient);

  // Adds rows [row0, row0 + a.rows()) of head `head`. For every strip of rows,
  // heads must come in order 0..H-1 (head 0 initialises the strip). `g` (the
  // same rows of the gradient) is required with a gradient rule. With
  // `stats`, also fills one RowStats per row of `a` in the same pass
  // (upper_max when `upper`).
  void AddRows(int head, int row0, const ConstMatrixView& a, const ConstMatrixView* g = nullptr,
               RowStats* stats = nullptr, bool upper = false);

  // The same for heads [head, head + count) straight from the wire (no
  // gradient rule): rows [row0, row0 + rows), one group of at most
  // kMaxFuseGroup heads read at a time. `stats` (or null): RowStats of head
  // g, row r at stats[g * stats_stride + r]. `causal` measures upper_max;
  // `lower_only` writes only the columns j <= i (see FuseTask).
  void AddWireRows(int head, int count, WireType type, const WireRows* in, int row0, int rows,
                   RowStats* stats, int stats_stride, bool causal, bool lower_only);

  // The fused matrix once every head has been added to every row; the mean's
  // 1/H is left to ApplyResidual (see residual_scale()).
  Eigen::Map<MatrixF> fused();
  float* fused_row(int i) { return acc_.data() + static_cast<int64_t>(i) * cols_; }
  // Moves the fused matrix's buffer out: the next layer allocates another.
  Buffer TakeFused() { return std::move(acc_); }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  // The factor ApplyResidual must apply to fused() (1/H for the mean, else 1).
  float residual_scale() const;

 private:
  template <typename Term>
  void AddTerms(int head, int row0, const ConstMatrixView& a, const ConstMatrixView& g, Term term,
                RowStats* stats, bool upper);

  Fusion fusion_;
  GradientRule gradient_;
  std::vector<float> weights_;
  int num_heads_;
  int rows_, cols_;
  Buffer acc_;  // rows_ x cols_, row-major; allocated by the first AddRows
};

// Head weights for `fusion` (kWeighted, or as the aggregate of head-specific
// rollout when `weights_used`): exactly num_heads finite values >= 0 with a
// positive sum, and none otherwise. `root` names the options in messages
// ("rollout.head_weights: expected ...").
absl::Status ValidateHeadWeights(const std::vector<float>& weights, bool weights_used, int num_heads,
                                 absl::string_view root);

// f <- (1 - a) * scale * f + a I, then (optionally) every row divided by its
// sum, in one pass per row. With `row_weights` (length rows), row i uses
// a = row_weights[i] instead. A row whose sum is 0 (possible with min fusion
// and a = 0) is left at 0.
void ApplyResidual(float a, bool renormalize, Eigen::Ref<MatrixF> f, float scale = 1.0f,
                   const float* row_weights = nullptr);
// The same for one row i of `len` values (the causal lower triangle: i + 1).
void ApplyResidualRow(float a, bool renormalize, float scale, int i, int len, float* row);

// The norm-based view (Kobayashi et al. 2020): a[i, j] <- a[i, j] * norms[j],
// then each row divided by its sum (a row whose sum becomes 0 stays 0).
// `a` is rows x cols with row stride `stride`; norms has cols entries.
void ApplyValueNorms(const float* norms, int rows, int cols, int64_t stride, float* a);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_HEAD_FUSION_H_
