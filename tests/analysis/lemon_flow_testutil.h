// The independent reference of attention flow: LEMON's Preflow on the
// design's graph (docs/conventions.md, "Attention flow": L + 1 layers of m
// nodes, an arc from input j of layer l to output i with capacity
// At_l(i, j) > 0), with a tolerance far below the tests'. The graph is built
// once; one call per (source, sink) pair. Used by the flow tests and the flow
// benchmark (LEMON is header templates plus liblemon).
#ifndef ATTNROLL_TESTS_ANALYSIS_LEMON_FLOW_TESTUTIL_H_
#define ATTNROLL_TESTS_ANALYSIS_LEMON_FLOW_TESTUTIL_H_

#include <vector>

#include <lemon/preflow.h>
#include <lemon/smart_graph.h>
#include <lemon/tolerance.h>

#include "server/analysis/types.h"

namespace attnroll::testutil {

class LemonFlow {
 public:
  explicit LemonFlow(const std::vector<analysis::MatrixF>& layers)
      : L_(static_cast<int>(layers.size())), m_(static_cast<int>(layers[0].rows())), cap_(g_) {
    for (int v = 0; v < (L_ + 1) * m_; ++v) nodes_.push_back(g_.addNode());
    for (int l = 1; l <= L_; ++l) {
      for (int i = 0; i < m_; ++i) {
        for (int j = 0; j < m_; ++j) {
          const float c = layers[l - 1](i, j);
          if (c > 0) cap_[g_.addArc(nodes_[(l - 1) * m_ + j], nodes_[l * m_ + i])] = c;
        }
      }
    }
  }
  // The max flow from input node `source` to output node `sink`.
  double operator()(int source, int sink) {
    lemon::Preflow<lemon::SmartDigraph, lemon::SmartDigraph::ArcMap<double>> pf(
        g_, cap_, nodes_[source], nodes_[L_ * m_ + sink]);
    pf.tolerance(lemon::Tolerance<double>(1e-18));
    pf.runMinCut();
    return pf.flowValue();
  }

 private:
  int L_, m_;
  lemon::SmartDigraph g_;
  lemon::SmartDigraph::ArcMap<double> cap_;
  std::vector<lemon::SmartDigraph::Node> nodes_;
};

}  // namespace attnroll::testutil

#endif  // ATTNROLL_TESTS_ANALYSIS_LEMON_FLOW_TESTUTIL_H_
