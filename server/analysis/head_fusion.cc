#include "server/analysis/head_fusion.h"

#include <utility>

namespace attnroll::analysis {

HeadFuser::HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int size)
    : fusion_(fusion), weights_(std::move(weights)), num_heads_(num_heads) {}
// acc_ is sized by the first Add, so constructing a fuser allocates nothing.

void HeadFuser::Add(int head, const ConstMatrixView& a) {
  const bool first = added_ == 0;
  ++added_;
  switch (fusion_) {
    case Fusion::kMean:
      if (first) acc_ = a; else acc_ += a;
      break;
    case Fusion::kWeighted:
      if (first) acc_ = weights_[head] * a; else acc_ += weights_[head] * a;
      break;
    case Fusion::kMax:
      if (first) acc_ = a; else acc_ = acc_.cwiseMax(a);
      break;
    case Fusion::kMin:
      if (first) acc_ = a; else acc_ = acc_.cwiseMin(a);
      break;
  }
}

MatrixF& HeadFuser::Fused() {
  if (fusion_ == Fusion::kMean) acc_ *= 1.0f / static_cast<float>(num_heads_);
  added_ = 0;
  return acc_;
}

void ApplyResidual(float a, bool renormalize, MatrixF& f) {
  if (a != 0.0f) {
    f *= (1.0f - a);
    f.diagonal().array() += a;
  }
  if (!renormalize) return;
  for (Eigen::Index i = 0; i < f.rows(); ++i) {
    // Rows are long (up to max_tokens): accumulate in double.
    const double s = f.row(i).cast<double>().sum();
    if (s > 0.0) f.row(i) *= static_cast<float>(1.0 / s);
  }
}

}  // namespace attnroll::analysis
