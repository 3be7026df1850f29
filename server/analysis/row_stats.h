// Per-row figures of an attention block that the service validates (sum,
// minimum, largest value above the diagonal). Computed by the same loop that
// fuses a head, so validating costs no extra pass over memory.
#ifndef ATTNROLL_SERVER_ANALYSIS_ROW_STATS_H_
#define ATTNROLL_SERVER_ANALYSIS_ROW_STATS_H_

#include "server/analysis/fuse_kernels.h"  // RowStats
#include "server/analysis/types.h"

namespace attnroll::analysis {

// Stats of rows [row0, row0 + a.rows()) of a block; `upper`: fill upper_max.
void ComputeRowStats(const ConstMatrixView& a, int row0, bool upper, RowStats* out);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_ROW_STATS_H_
