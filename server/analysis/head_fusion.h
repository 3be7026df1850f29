// Fuses the H heads of one layer into one matrix, one head at a time, so a layer
// split into head ranges over several messages never has to be held whole.
#ifndef ATTNROLL_SERVER_ANALYSIS_HEAD_FUSION_H_
#define ATTNROLL_SERVER_ANALYSIS_HEAD_FUSION_H_

#include <vector>

#include "server/analysis/types.h"

namespace attnroll::analysis {

class HeadFuser {
 public:
  // `weights` is used by Fusion::kWeighted only (one per head).
  HeadFuser(Fusion fusion, std::vector<float> weights, int num_heads, int size);

  // Adds head `head` (heads may come in any order, each exactly once).
  void Add(int head, const ConstMatrixView& a);
  bool complete() const { return added_ == num_heads_; }
  // The fused matrix; valid once complete(). Resets the fuser for the next layer.
  MatrixF& Fused();

 private:
  Fusion fusion_;
  std::vector<float> weights_;
  int num_heads_;
  int added_ = 0;
  MatrixF acc_;
};

// At = (1 - a) F + a I, then (optionally) every row divided by its sum, in place.
// A row whose sum is 0 (possible with min fusion and a = 0) is left at 0.
void ApplyResidual(float a, bool renormalize, MatrixF& f);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_HEAD_FUSION_H_
