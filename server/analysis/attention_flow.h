// Attention flow (Abnar & Zuidema 2020), exact, for one sequence.
// Conventions: design.md section 4.
//
// The graph: (L+1) m nodes (l, i), l = 0..L from the input side, and for every
// layer l = 1..L an edge (l-1, j) -> (l, i) with capacity At_l[i, j] (row i =
// query i, column j = key j; At_l the fused, residual-corrected attention).
//   flow(i, j) = max-flow value from input node (0, j) to output node (L, i).
// This is the reference `compute_flows` of Abnar & Zuidema (entry [i, j] = flow
// from input j to output i; they run networkx on the reversed graph, which has
// the same max-flow values). The map of output token i is flow(i, :); callers
// divide it by its sum (or return it raw).
//
// Algorithm (attention_flow.cc has the details): Dinic's blocking flows on the
// layered DAG, specialised to it, with an early exit. Each flow is bounded by
//   min(column sum of At_1 at j, row sum of At_L at i)
// and a flow reaching that bound is optimal, so most pairs finish after a few
// hundred augmenting paths without ever proving a cut. The values are exact
// max flows in double arithmetic: capacities are the float inputs widened to
// double, and the result is within ~1e-12 (relative to the bound) of the true
// max flow; capacities below 1e-15 are treated as absent (each such edge can
// change a flow by at most its capacity).
//
// Cost: O(L m) per augmenting path plus O(m) per node visited; typically a
// few hundred microseconds per (source, sink) pair at ViT-B size (L=12,
// m=197). Pairs are independent: parallelise over sources (or sinks) with one
// AttentionFlow object per thread.
#ifndef ATTNROLL_SERVER_ANALYSIS_ATTENTION_FLOW_H_
#define ATTNROLL_SERVER_ANALYSIS_ATTENTION_FLOW_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "server/analysis/types.h"

namespace attnroll::analysis {

class AttentionFlow {
 public:
  // `layers` = At_1..At_L, all m x m, non-negative (rows need not sum to 1:
  // the bound uses the actual sums). NOT copied: `layers` must outlive this
  // object and must not change while it is used. Several AttentionFlow
  // objects over the same `layers` may run in different threads (the input
  // is only read; every object has its own scratch). One object is not
  // thread-safe. Scratch (~ 8 L m^2 bytes of flow, allocated here) is reused
  // by every call.
  explicit AttentionFlow(const std::vector<MatrixF>& layers);

  AttentionFlow(const AttentionFlow&) = delete;
  AttentionFlow& operator=(const AttentionFlow&) = delete;

  int size() const { return m_; }
  int num_layers() const { return num_layers_; }

  // Max-flow value from input token `source` (node (0, source)) to output
  // token `sink` (node (L, sink)). 0 <= source, sink < size(). With no
  // layers (L = 0) the graph is one node per token: +inf if source == sink,
  // else 0 (callers should not ask).
  double MaxFlow(int source, int sink);

  // out[j] = flow(sink, j) = MaxFlow(j, sink) for every source j in [0, m).
  // `cancelled` (may be empty) is polled between sources; when it returns
  // true the call stops and returns false (out[] is then partly filled).
  bool FlowRow(int sink, double* out, const std::function<bool()>& cancelled = {});

  // The upper bound min(colsum At_1[:, source], rowsum At_L[sink, :]).
  double Bound(int source, int sink) const;

  // Counters of the last MaxFlow call (for tests and benchmarks).
  struct Stats {
    int64_t phases = 0;        // blocking-flow phases (BFS after the first)
    int64_t augmentations = 0; // augmenting paths
    int64_t arcs_scanned = 0;  // arcs looked at by the DFS and BFS
    bool hit_bound = false;    // finished by reaching Bound() (no cut proof)
  };
  const Stats& last_stats() const { return stats_; }

  // Bytes of scratch an object for (num_layers, m) allocates.
  static int64_t WorkingBytes(int num_layers, int m);

 private:
  struct Arc {
    int head;      // node the arc leads to
    double* flow;  // its flow (for a backward arc: the forward arc's flow)
    double cap;    // capacity of a forward arc; -1 for a backward arc
  };
  double Solve(int source, int sink);
  bool Bfs(int src, int snk);
  bool NextArc(int v, int snk, Arc* arc);
  double BlockingFlow(int src, int snk, double limit, double tol);
  void Kill(int v);
  void ResetFlows();

  const std::vector<MatrixF>& layers_;
  int num_layers_ = 0;
  int m_ = 0;
  std::vector<double> colsum_first_;  // column sums of At_1
  std::vector<double> rowsum_last_;   // row sums of At_L

  // Scratch, reused by every call. Node (l, i) is l m + i. Internally the
  // graph is reversed (arcs (l, i) -> (l-1, j)), so a node's arcs are a
  // contiguous row of At_l; flow_[(l-1) m^2 + i m + j] is that arc's flow.
  std::vector<double> flow_;
  std::vector<double*> touched_;           // flow_ entries made non-zero
  std::vector<std::vector<int>> back_;     // (l, j): the i with flow on (l+1, i) -> (l, j)
  std::vector<int> touched_nodes_;         // nodes whose back_ is non-empty
  std::vector<int> level_;                 // BFS level; < 0: unreached or retired
  std::vector<int> cursor_;                // current arc (see NextArc)
  std::vector<int> queue_;
  std::vector<int> node_layer_, node_index_;
  std::vector<int> live_count_;            // per layer: nodes with level >= 0
  std::vector<char> live_valid_;
  std::vector<std::vector<int>> live_list_;  // per layer: superset of live nodes, sorted
  // DFS frames (see BlockingFlow).
  std::vector<int> frame_node_;
  std::vector<double> frame_limit_, frame_sent_;
  std::vector<double*> frame_flow_;
  std::vector<double> frame_cap_;
  Stats stats_;
};

// Estimated work (arbitrary units, roughly proportional to single-core run
// time; 1 unit ~ 1 arc scanned, about a nanosecond) of computing `num_sinks`
// output rows (num_sinks * m max flows) on L layers of m tokens. Use it to
// refuse requests above a configured limit. It grows as L m^2 per pair, so
// m^3 per row. Structured attention that needs cut proofs can cost several
// times more than the estimate; i.i.d. attention costs much less.
double EstimateFlowCost(int num_layers, int m, int num_sinks);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_ATTENTION_FLOW_H_
