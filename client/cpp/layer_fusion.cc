#include "client/cpp/layer_fusion.h"

#include <algorithm>
#include <vector>

namespace attnroll::client {
namespace {

// The plain loop for the padding (entries the kernels are not asked about):
// the same operations, in the same order, as the kernels.
void FusePlain(const LayerFusion& f, int row, int col0, int col1) {
  float* acc = f.out + static_cast<int64_t>(row) * f.n;
  const int64_t head_stride = static_cast<int64_t>(f.rows) * f.n;
  for (int h = 0; h < f.num_heads; ++h) {
    const float* v = f.heads + h * head_stride + static_cast<int64_t>(row) * f.n;
    for (int j = col0; j < col1; ++j) {
      if (f.scale == nullptr) {
        acc[j] = h == 0 ? v[j] : acc[j] + v[j];
      } else {
        const float t = f.scale[h] * v[j];
        acc[j] = h == 0 ? t : acc[j] + t;
      }
    }
  }
  if (f.scale == nullptr) {
    for (int j = col0; j < col1; ++j) acc[j] *= f.mean_scale;
  }
}

}  // namespace

void FuseLayer(const LayerFusion& f, analysis::RowStats* stats) {
  const int measured = MeasuredRows(f);
  const int64_t head_stride = static_cast<int64_t>(f.rows) * f.n;
  if (measured > 0) {
    std::vector<analysis::WireRows> in(static_cast<size_t>(f.num_heads));
    for (int h = 0; h < f.num_heads; ++h) in[h] = {f.heads + h * head_stride, f.n};
    analysis::FuseTask t;
    t.type = analysis::WireType::kF32;
    t.rows = measured;
    t.cols = f.valid;
    t.row0 = 0;
    t.op = f.scale == nullptr ? analysis::FuseOp::kSum : analysis::FuseOp::kWeightedSum;
    t.causal = f.causal;
    t.acc = f.out;
    t.acc_stride = f.n;
    t.stats_stride = measured;
    for (int g = 0; g < f.num_heads; g += analysis::kMaxFuseGroup) {
      t.heads = std::min(analysis::kMaxFuseGroup, f.num_heads - g);
      t.in = in.data() + g;
      t.weights = f.scale == nullptr ? nullptr : f.scale + g;
      t.init = g == 0;
      t.stats = stats + static_cast<int64_t>(g) * measured;
      analysis::FuseRows(t);
    }
    if (f.scale == nullptr) {
      for (int r = 0; r < measured; ++r) {
        float* acc = f.out + static_cast<int64_t>(r) * f.n;
        for (int j = 0; j < f.valid; ++j) acc[j] *= f.mean_scale;
      }
    }
  }
  // Padding: the columns past the valid ones, and the rows past them.
  if (f.valid < f.n) {
    for (int r = 0; r < measured; ++r) FusePlain(f, r, f.valid, f.n);
  }
  for (int r = measured; r < f.rows; ++r) FusePlain(f, r, 0, f.n);
}

}  // namespace attnroll::client
