#include "server/analysis/head_fusion.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace attnroll::analysis {
namespace {

// One pass over a row: dst[j] = op(dst[j], term(a[j], g[j])), and a's sum,
// min and max over columns j >= upper_from (cols: none). Without a gradient,
// g == a and term ignores it. `omp simd` (compiled with -fopenmp-simd, no
// OpenMP runtime) lets the float reductions vectorise without -ffast-math.
template <typename Op, typename Term>
void FuseRow(const float* __restrict a, const float* __restrict g, float* __restrict dst, int cols,
             int upper_from, Op op, Term term, RowStats* st) {
  if (st == nullptr) {
#pragma omp simd
    for (int j = 0; j < cols; ++j) dst[j] = op(dst[j], term(a[j], g[j]));
    return;
  }
  float sum = 0.0f, mn = INFINITY, upper = 0.0f;
#pragma omp simd reduction(+ : sum) reduction(min : mn)
  for (int j = 0; j < upper_from; ++j) {
    const float v = a[j];
    sum += v;
    mn = v < mn ? v : mn;
    dst[j] = op(dst[j], term(v, g[j]));
  }
#pragma omp simd reduction(+ : sum) reduction(min : mn) reduction(max : upper)
  for (int j = upper_from; j < cols; ++j) {
    const float v = a[j];
    sum += v;
    mn = v < mn ? v : mn;
    upper = v > upper ? v : upper;
    dst[j] = op(dst[j], term(v, g[j]));
  }
  st->sum = sum;
  st->min = mn;
  st->upper_max = upper;
}

template <typename Op, typename Term>
void FuseRows(int row0, const ConstMatrixView& a, const ConstMatrixView& g, Eigen::Map<MatrixF> acc,
              Op op, Term term, RowStats* stats, bool upper) {
  const int cols = static_cast<int>(a.cols());
  for (Eigen::Index r = 0; r < a.rows(); ++r) {
    const int i = row0 + static_cast<int>(r);
    FuseRow(a.data() + r * a.outerStride(), g.data() + r * g.outerStride(), acc.row(i).data(), cols,
            upper ? std::min(i + 1, cols) : cols, op, term, stats == nullptr ? nullptr : stats + r);
  }
}

}  // namespace

void ComputeRowStats(const ConstMatrixView& a, int row0, bool upper, RowStats* out) {
  const int cols = static_cast<int>(a.cols());
  for (Eigen::Index r = 0; r < a.rows(); ++r) {
    const float* row = a.data() + r * a.outerStride();
    const int upper_from = upper ? std::min(row0 + static_cast<int>(r) + 1, cols) : cols;
    float sum = 0.0f, mn = INFINITY, mx = 0.0f;
#pragma omp simd reduction(+ : sum) reduction(min : mn)
    for (int j = 0; j < upper_from; ++j) {
      sum += row[j];
      mn = row[j] < mn ? row[j] : mn;
    }
#pragma omp simd reduction(+ : sum) reduction(min : mn) reduction(max : mx)
    for (int j = upper_from; j < cols; ++j) {
      sum += row[j];
      mn = row[j] < mn ? row[j] : mn;
      mx = row[j] > mx ? row[j] : mx;
    }
    out[r] = {sum, mn, mx};
  }
}

HeadFuser::HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int size,
                     GradientRule gradient)
    : HeadFuser(fusion, std::move(weights), num_heads, size, size, gradient) {}

HeadFuser::HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int rows, int cols,
                     GradientRule gradient)
    : fusion_(fusion),
      gradient_(gradient),
      weights_(std::move(weights)),
      num_heads_(num_heads),
      rows_(rows),
      cols_(cols) {}
// acc_ is sized by the first AddRows, so constructing a fuser allocates nothing.

float HeadFuser::residual_scale() const {
  return fusion_ == Fusion::kMean ? 1.0f / static_cast<float>(num_heads_) : 1.0f;
}

Eigen::Map<MatrixF> HeadFuser::fused() {
  if (acc_.empty()) acc_ = Buffer(static_cast<size_t>(rows_) * cols_);
  return acc_.Matrix(rows_, cols_);
}

void HeadFuser::AddWireRows(int head, int count, WireType type, const WireRows* in, int row0,
                            int rows, RowStats* stats, int stats_stride, bool causal,
                            bool lower_only) {
  if (acc_.empty()) acc_ = Buffer(static_cast<size_t>(rows_) * cols_);
  FuseTask t;
  t.type = type;
  t.rows = rows;
  t.cols = cols_;
  t.row0 = row0;
  t.causal = causal;
  t.lower_only = lower_only;
  t.acc_stride = cols_;
  t.stats_stride = stats_stride;
  switch (fusion_) {
    case Fusion::kWeighted: t.op = FuseOp::kWeightedSum; break;
    case Fusion::kMax: t.op = FuseOp::kMax; break;
    case Fusion::kMin: t.op = FuseOp::kMin; break;
    default: t.op = FuseOp::kSum; break;
  }
  for (int g = 0; g < count; g += kMaxFuseGroup) {
    t.heads = std::min(kMaxFuseGroup, count - g);
    t.in = in + g;
    t.weights = fusion_ == Fusion::kWeighted ? weights_.data() + head + g : nullptr;
    t.init = head + g == 0;
    t.acc = acc_.data() + static_cast<int64_t>(row0) * cols_;
    t.stats = stats == nullptr ? nullptr : stats + static_cast<int64_t>(g) * stats_stride;
    FuseRows(t);
  }
}

void HeadFuser::AddRows(int head, int row0, const ConstMatrixView& a, const ConstMatrixView* g,
                        RowStats* stats, bool upper) {
  if (acc_.empty()) acc_ = Buffer(static_cast<size_t>(rows_) * cols_);
  switch (gradient_) {
    case GradientRule::kNone:
      return AddTerms(head, row0, a, a, [](float v, float) { return v; }, stats, upper);
    case GradientRule::kChefer:
      return AddTerms(head, row0, a, *g, [](float v, float d) { return std::max(0.0f, v * d); },
                      stats, upper);
    case GradientRule::kVitExplain:
      return AddTerms(head, row0, a, *g, [](float v, float d) { return v * d; }, stats, upper);
  }
}

template <typename Term>
void HeadFuser::AddTerms(int head, int row0, const ConstMatrixView& a, const ConstMatrixView& g,
                         Term term, RowStats* stats, bool upper) {
  const float w = fusion_ == Fusion::kWeighted ? weights_[head] : 1.0f;
  if (head == 0) {  // the first head initialises the rows
    FuseRows(row0, a, g, fused(), [w](float, float t) { return w * t; }, term, stats, upper);
    return;
  }
  Eigen::Map<MatrixF> acc = fused();
  switch (fusion_) {
    case Fusion::kMean:
      FuseRows(row0, a, g, acc, [](float d, float t) { return d + t; }, term, stats, upper);
      break;
    case Fusion::kWeighted:
      FuseRows(row0, a, g, acc, [w](float d, float t) { return d + w * t; }, term, stats, upper);
      break;
    case Fusion::kMax:
      FuseRows(row0, a, g, acc, [](float d, float t) { return t > d ? t : d; }, term, stats, upper);
      break;
    case Fusion::kMin:
      FuseRows(row0, a, g, acc, [](float d, float t) { return t < d ? t : d; }, term, stats, upper);
      break;
    case Fusion::kNone:  // a head-specific rollout's chains fuse one head each (kMean)
      break;
  }
}

void ApplyValueNorms(const float* norms, int rows, int cols, int64_t stride, float* a) {
  for (int r = 0; r < rows; ++r) {
    float* row = a + r * stride;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < cols; ++j) {
      row[j] *= norms[j];
      sum += row[j];
    }
    if (sum <= 0.0) continue;
    const float inv = static_cast<float>(1.0 / sum);
#pragma omp simd
    for (int j = 0; j < cols; ++j) row[j] *= inv;
  }
}

absl::Status ValidateHeadWeights(const std::vector<float>& weights, bool weights_used, int num_heads,
                                 absl::string_view root) {
  if (!weights_used) {
    if (weights.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        root, ".head_weights: only used with fusion (or head_aggregate) WEIGHTED, got ",
        weights.size(), " weights"));
  }
  if (static_cast<int>(weights.size()) != num_heads) {
    return absl::InvalidArgumentError(absl::StrCat(root, ".head_weights: expected ", num_heads,
                                                   " weights (one per head), got ", weights.size()));
  }
  double sum = 0;
  for (size_t h = 0; h < weights.size(); ++h) {
    const float w = weights[h];
    if (!std::isfinite(w) || w < 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat(root, ".head_weights[", h, "]: expected a finite value >= 0, got ", w));
    }
    sum += w;
  }
  if (sum <= 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(root, ".head_weights: expected a positive sum, got 0"));
  }
  return absl::OkStatus();
}

void ApplyResidual(float a, bool renormalize, Eigen::Ref<MatrixF> f, float scale,
                   const float* row_weights) {
  for (Eigen::Index i = 0; i < f.rows(); ++i) {
    ApplyResidualRow(row_weights != nullptr ? row_weights[i] : a, renormalize, scale,
                     static_cast<int>(i), static_cast<int>(f.cols()), f.row(i).data());
  }
}

void ApplyResidualRow(float a, bool renormalize, float scale, int i, int len, float* row) {
  const float keep = (1.0f - a) * scale;
  if (keep != 1.0f) {
#pragma omp simd
    for (int j = 0; j < len; ++j) row[j] *= keep;
  }
  row[i] += a;
  if (!renormalize) return;
  // Rows are long (up to max_tokens): sum in double.
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int j = 0; j < len; ++j) s += row[j];
  if (s > 0.0) {
    const float inv = static_cast<float>(1.0 / s);
#pragma omp simd
    for (int j = 0; j < len; ++j) row[j] *= inv;
  }
}

}  // namespace attnroll::analysis
