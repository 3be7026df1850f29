#include "server/analysis/head_fusion.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace attnroll::analysis {
namespace {

// One pass over a row: dst[j] = op(dst[j], src[j]), the row's sum and min,
// and the max over columns j >= upper_from (cols: none). `omp simd` (compiled
// with -fopenmp-simd, no OpenMP runtime) lets the float reductions vectorise
// without -ffast-math.
template <typename Op>
void FuseRow(const float* __restrict src, float* __restrict dst, int cols, int upper_from, Op op,
             RowStats* st) {
  if (st == nullptr) {
#pragma omp simd
    for (int j = 0; j < cols; ++j) dst[j] = op(dst[j], src[j]);
    return;
  }
  float sum = 0.0f, mn = INFINITY, upper = 0.0f;
#pragma omp simd reduction(+ : sum) reduction(min : mn)
  for (int j = 0; j < upper_from; ++j) {
    const float v = src[j];
    sum += v;
    mn = v < mn ? v : mn;
    dst[j] = op(dst[j], v);
  }
#pragma omp simd reduction(+ : sum) reduction(min : mn) reduction(max : upper)
  for (int j = upper_from; j < cols; ++j) {
    const float v = src[j];
    sum += v;
    mn = v < mn ? v : mn;
    upper = v > upper ? v : upper;
    dst[j] = op(dst[j], v);
  }
  st->sum = sum;
  st->min = mn;
  st->upper_max = upper;
}

template <typename Op>
void FuseRows(int row0, const ConstMatrixView& a, MatrixF& acc, Op op, RowStats* stats,
              bool upper) {
  const int cols = static_cast<int>(a.cols());
  for (Eigen::Index r = 0; r < a.rows(); ++r) {
    const int i = row0 + static_cast<int>(r);
    FuseRow(a.data() + r * a.outerStride(), acc.row(i).data(), cols,
            upper ? std::min(i + 1, cols) : cols, op, stats == nullptr ? nullptr : stats + r);
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

HeadFuser::HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int size)
    : fusion_(fusion), weights_(std::move(weights)), num_heads_(num_heads), size_(size) {}
// acc_ is sized by the first AddRows, so constructing a fuser allocates nothing.

float HeadFuser::residual_scale() const {
  return fusion_ == Fusion::kMean ? 1.0f / static_cast<float>(num_heads_) : 1.0f;
}

void HeadFuser::AddRows(int head, int row0, const ConstMatrixView& a, RowStats* stats, bool upper) {
  if (acc_.rows() != size_ || acc_.cols() != size_) acc_.resize(size_, size_);
  const bool first = head == 0;
  const float w = fusion_ == Fusion::kWeighted ? weights_[head] : 1.0f;
  if (first) {
    if (fusion_ == Fusion::kWeighted) {
      FuseRows(row0, a, acc_, [w](float, float v) { return w * v; }, stats, upper);
    } else {
      FuseRows(row0, a, acc_, [](float, float v) { return v; }, stats, upper);
    }
    return;
  }
  switch (fusion_) {
    case Fusion::kMean:
      FuseRows(row0, a, acc_, [](float d, float v) { return d + v; }, stats, upper);
      break;
    case Fusion::kWeighted:
      FuseRows(row0, a, acc_, [w](float d, float v) { return d + w * v; }, stats, upper);
      break;
    case Fusion::kMax:
      FuseRows(row0, a, acc_, [](float d, float v) { return v > d ? v : d; }, stats, upper);
      break;
    case Fusion::kMin:
      FuseRows(row0, a, acc_, [](float d, float v) { return v < d ? v : d; }, stats, upper);
      break;
  }
}

void ApplyResidual(float a, bool renormalize, MatrixF& f, float scale) {
  const float keep = (1.0f - a) * scale;
  for (Eigen::Index i = 0; i < f.rows(); ++i) {
    auto row = f.row(i);
    if (keep != 1.0f) row *= keep;
    row(i) += a;
    if (!renormalize) continue;
    // Rows are long (up to max_tokens): sum in double.
    const double s = row.cast<double>().sum();
    if (s > 0.0) row *= static_cast<float>(1.0 / s);
  }
}

}  // namespace attnroll::analysis
