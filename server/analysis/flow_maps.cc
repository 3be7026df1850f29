#include "server/analysis/flow_maps.h"

namespace attnroll::analysis {

Maps FlowMaps(const Eigen::MatrixXd& flows, bool raw, const ReadoutSpec& readout) {
  const int k = static_cast<int>(flows.rows()), m = static_cast<int>(flows.cols());
  Maps maps;
  maps.shape.push_back(k);
  for (int64_t d : MapShape(readout, m)) maps.shape.push_back(d);
  const int len = m - readout.prefix;
  maps.values.resize(static_cast<size_t>(k) * len);
  for (int r = 0; r < k; ++r) {
    Eigen::RowVectorXd row = flows.row(r);
    const double sum = row.sum();
    if (!raw && sum > 0.0) row /= sum;
    const RowVectorF as_float = row.cast<float>();
    WriteMap(readout, as_float, maps.values.data() + static_cast<size_t>(r) * len);
  }
  return maps;
}

}  // namespace attnroll::analysis
