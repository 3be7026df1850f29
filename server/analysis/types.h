// Plain value types shared by the analyses. Eigen + std only: no gRPC, no I/O.
#ifndef ATTNROLL_SERVER_ANALYSIS_TYPES_H_
#define ATTNROLL_SERVER_ANALYSIS_TYPES_H_

#include <cstdint>
#include <vector>

#include <Eigen/Core>

namespace attnroll::analysis {

// Row-major, like the wire: row i is query i.
using MatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVectorF = Eigen::Matrix<float, 1, Eigen::Dynamic>;
// A read-only m x m block of a larger row-major buffer (padding cropped by stride).
using ConstMatrixView = Eigen::Map<const MatrixF, Eigen::Unaligned, Eigen::OuterStride<>>;

// kNone: head-specific rollout (one chain per head), see RolloutSpec.head_aggregate.
enum class Fusion { kMean, kMax, kMin, kWeighted, kNone };
enum class Scaling { kNone, kMax, kMinMax, kSum };
// How a head's gradient weights its attention (gradient-weighted rollout).
enum class GradientRule { kNone, kChefer, kVitExplain };

// A dense float32 result, row-major.
struct Maps {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_TYPES_H_
