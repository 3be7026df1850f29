// Attention flow rows -> saliency maps (normalised per output token, or raw),
// with the same read-out (sink, prefix, grid, scaling) as rollout.
#ifndef ATTNROLL_SERVER_ANALYSIS_FLOW_MAPS_H_
#define ATTNROLL_SERVER_ANALYSIS_FLOW_MAPS_H_

#include <Eigen/Core>

#include "server/analysis/readout.h"
#include "server/analysis/types.h"

namespace attnroll::analysis {

// Row r of `flows` is flow(sink_r, j) over the m input tokens j. Each row is
// divided by its sum unless `raw` (a zero row stays zero), then written as a
// map: result [k, map...].
Maps FlowMaps(const Eigen::MatrixXd& flows, bool raw, const ReadoutSpec& readout);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_FLOW_MAPS_H_
