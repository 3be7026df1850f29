#include "server/analysis/head_fusion.h"

#include <utility>

namespace attnroll::analysis {

HeadFuser::HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int size)
    : fusion_(fusion), weights_(std::move(weights)), num_heads_(num_heads), size_(size) {}
// acc_ is sized by the first AddRows, so constructing a fuser allocates nothing.

float HeadFuser::residual_scale() const {
  return fusion_ == Fusion::kMean ? 1.0f / static_cast<float>(num_heads_) : 1.0f;
}

void HeadFuser::AddRows(int head, int row0, const ConstMatrixView& a) {
  if (acc_.rows() != size_ || acc_.cols() != size_) acc_.resize(size_, size_);
  auto dst = acc_.middleRows(row0, a.rows());
  const bool first = head == 0;
  switch (fusion_) {
    case Fusion::kMean:
      if (first) dst = a; else dst += a;
      break;
    case Fusion::kWeighted:
      if (first) dst = weights_[head] * a; else dst += weights_[head] * a;
      break;
    case Fusion::kMax:
      if (first) dst = a; else dst = dst.cwiseMax(a);
      break;
    case Fusion::kMin:
      if (first) dst = a; else dst = dst.cwiseMin(a);
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
