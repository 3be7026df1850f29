// Turns rows of a rollout matrix into saliency maps: drop the P prefix tokens,
// scale, and describe the (h, w) grid the client asked for.
#ifndef ATTNROLL_SERVER_ANALYSIS_READOUT_H_
#define ATTNROLL_SERVER_ANALYSIS_READOUT_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "server/analysis/types.h"

namespace attnroll::analysis {

struct ReadoutSpec {
  std::vector<int> rows;     // query rows; empty, !mean_of_rows, !last_row => row 0
  bool mean_of_rows = false; // one map: mean over all m query rows
  bool last_row = false;     // one map: row m - 1 (the last valid token)
  int sink = 0;              // key columns [0, sink) zeroed, the rest renormalised
  int prefix = 0;            // P tokens dropped from every map
  int grid_h = 0;            // 0 => no grid: maps are flat [m - P]
  int grid_w = 0;
  Scaling scaling = Scaling::kNone;
};

// Checks the spec against a sequence of m valid tokens.
absl::Status ValidateReadout(const ReadoutSpec& spec, int m);

// The rows to read out of a sequence of m tokens (row 0 by default); empty
// when mean_of_rows.
std::vector<int> ResolvedRows(const ReadoutSpec& spec, int m);
// Number of maps per R (k).
int NumMaps(const ReadoutSpec& spec);
// Trailing shape of one map: {m - P} or {h, w}.
std::vector<int64_t> MapShape(const ReadoutSpec& spec, int m);

// Writes the m - P values of `row` (length m) to out: sink columns zeroed and
// the row renormalised, prefix dropped, scaled. Returns false when the map has
// no mass (every value <= 0 before scaling): a degenerate map.
bool WriteMap(const ReadoutSpec& spec, const Eigen::Ref<const RowVectorF>& row, float* out);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_READOUT_H_
