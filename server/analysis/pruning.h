// Pruning of each layer (sparse / top-k rollout), each step in its published
// place: discard_ratio (vit-explain), threshold and mass (DINO) prune the
// fused matrix F before the residual, and the residual is added to the pruned,
// unnormalised matrix before rows are renormalised:
//   At = rownorm((1 - a) prune(F) + a I)
// top_k (top-k rollout) prunes At after the residual, then rows are
// renormalised. Every step's place is an option. Conventions:
// docs/conventions.md, "Pruning".
#ifndef ATTNROLL_SERVER_ANALYSIS_PRUNING_H_
#define ATTNROLL_SERVER_ANALYSIS_PRUNING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "server/analysis/types.h"

namespace attnroll::analysis {

// Where a step runs: on the fused matrix F before the residual, or on At after it.
enum class PrunePlace { kBeforeResidual, kAfterResidual };

struct PruneSpec {
  double discard_ratio = 0;  // [0, 1): lowest fraction of all m*m entries, never (0, 0)
  float threshold = 0;      // per row: drop entries < threshold
  float mass = 0;           // (0, 1]: per row keep the largest entries holding this share
  int top_k = 0;            // per row: keep the k largest
  // The published places (see above).
  PrunePlace discard_at = PrunePlace::kBeforeResidual;
  PrunePlace threshold_at = PrunePlace::kBeforeResidual;
  PrunePlace mass_at = PrunePlace::kBeforeResidual;
  PrunePlace top_k_at = PrunePlace::kAfterResidual;
  // Steps before the residual: renormalise the pruned rows of F before the
  // residual is added (rownorm((1 - a) rownorm(prune(F)) + a I)), instead of
  // adding the residual to the unnormalised pruned matrix.
  bool renormalize_before_residual = false;

  bool enabled() const { return discard_ratio > 0 || threshold > 0 || mass > 0 || top_k > 0; }
  // Some enabled step runs at `place`.
  bool any_at(PrunePlace place) const;
};

absl::Status ValidatePruneSpec(const PruneSpec& spec);

// Applies, in order (discard_ratio, threshold, mass, top_k), the enabled steps
// placed at `place`, then, if `renormalize`, divides each row by its sum. A
// row that had mass and was left with none gets its diagonal (f[i, i] = 1).
// Returns the number of such rows.
int64_t Prune(const PruneSpec& spec, PrunePlace place, bool renormalize, Eigen::Ref<MatrixF> f);

// Every enabled step, wherever it is placed (the steps by hand, in tests).
int64_t Prune(const PruneSpec& spec, bool renormalize, Eigen::Ref<MatrixF> f);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_PRUNING_H_
