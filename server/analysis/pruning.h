// Pruning of a fused attention matrix before the residual (sparse / top-k
// rollout). Conventions: docs/conventions.md, "Pruning".
#ifndef ATTNROLL_SERVER_ANALYSIS_PRUNING_H_
#define ATTNROLL_SERVER_ANALYSIS_PRUNING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "server/analysis/types.h"

namespace attnroll::analysis {

struct PruneSpec {
  double discard_ratio = 0;  // [0, 1): lowest fraction of all m*m entries, never (0, 0)
  float threshold = 0;      // per row: drop entries < threshold
  float mass = 0;           // (0, 1]: per row keep the largest entries holding this share
  int top_k = 0;            // per row: keep the k largest
  bool enabled() const { return discard_ratio > 0 || threshold > 0 || mass > 0 || top_k > 0; }
};

absl::Status ValidatePruneSpec(const PruneSpec& spec);

// Applies the steps in order (discard_ratio, threshold, mass, top_k), then, if
// `renormalize`, divides each row by its sum. A row left with no mass gets
// F[i, i] = 1. Returns the number of such rows.
int64_t Prune(const PruneSpec& spec, bool renormalize, MatrixF& f);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_PRUNING_H_
