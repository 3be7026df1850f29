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
void FuseRows(int row0, const ConstMatrixView& a, const ConstMatrixView& g, MatrixF& acc, Op op,
              Term term, RowStats* stats, bool upper) {
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

void HeadFuser::AddRows(int head, int row0, const ConstMatrixView& a, const ConstMatrixView* g,
                        RowStats* stats, bool upper) {
  if (acc_.rows() != rows_ || acc_.cols() != cols_) acc_.resize(rows_, cols_);
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
    FuseRows(row0, a, g, acc_, [w](float, float t) { return w * t; }, term, stats, upper);
    return;
  }
  switch (fusion_) {
    case Fusion::kMean:
      FuseRows(row0, a, g, acc_, [](float d, float t) { return d + t; }, term, stats, upper);
      break;
    case Fusion::kWeighted:
      FuseRows(row0, a, g, acc_, [w](float d, float t) { return d + w * t; }, term, stats, upper);
      break;
    case Fusion::kMax:
      FuseRows(row0, a, g, acc_, [](float d, float t) { return t > d ? t : d; }, term, stats, upper);
      break;
    case Fusion::kMin:
      FuseRows(row0, a, g, acc_, [](float d, float t) { return t < d ? t : d; }, term, stats, upper);
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

void ApplyResidual(float a, bool renormalize, MatrixF& f, float scale, const float* row_weights) {
  for (Eigen::Index i = 0; i < f.rows(); ++i) {
    const float ai = row_weights != nullptr ? row_weights[i] : a;
    const float keep = (1.0f - ai) * scale;
    auto row = f.row(i);
    if (keep != 1.0f) row *= keep;
    row(i) += ai;
    if (!renormalize) continue;
    // Rows are long (up to max_tokens): sum in double.
    const double s = row.cast<double>().sum();
    if (s > 0.0) row *= static_cast<float>(1.0 / s);
  }
}

}  // namespace attnroll::analysis
