// Attention flow (Abnar & Zuidema 2020), exact, for one sequence.
// Conventions: docs/conventions.md, "Attention flow".
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
// Algorithm (attention_flow.cc has the details): Dinic's blocking flows,
// specialised to the layered dense DAG (diagonal arc first, then the source's
// column; layer-2 nodes push straight on to the sink), with an early exit.
// Each flow is at most min(column sum of At_1 at j, row sum of At_L at i); the DFS asks for
// exactly that much and stops when it gets it, so on real-looking attention
// most pairs end without any cut proof. The others end when a BFS of the
// residual graph no longer reaches the output node (that BFS is the proof).
// Split certificate, for objects that see a source more than once (several
// output rows): a flow from the source into layer b = (2L+2)/3 is computed
// once per source, and each of its pairs first searches only the upper layers
// for a flow that the lower one can feed; reaching the bound that way proves
// the bound exactly (TrySplit in attention_flow.cc). Pairs it does not settle
// are solved in full.
//
// Exactness: capacities are the float inputs widened to double (never
// rounded); flows are double sums. A pair that reaches its bound to within
// max(1e-15, 1e-12 relative) returns the bound (also when the split
// certificate settles it: the same acceptance); otherwise the value is the max flow up to
// rounding (~1e-15 per arc of the cut). Arcs of capacity <= 1e-15 (and
// residuals that small) count as absent, which moves a flow by at most their
// total. Tests: LEMON Preflow and networkx agree to 1e-6 relative on
// structured attention (tests/analysis/attention_flow_test.cc).
//
// Speed (tests/bench/flow_bench.cc, structured attention; a 2-core AMD EPYC
// VM, medians): ViT-B/16 (L=12, m=197) CLS row, all 197 sources: ~50-57 ms
// on one core; the full 197 x 197 matrix: ~2.2 s on one core (the split
// certificate settles nearly every pair; ~8.5 s searching every pair in
// full); BERT-base
// (m=512) CLS row: ~0.39-0.46 s on one core, ~0.22-0.27 s on 2 threads; BERT-base
// 8 rows: ~1.45 s. A pair searched in full takes ~2,000 augmenting paths (the
// flow fans out over ~3,700 arcs; most paths end by saturating an arc of
// layers 2-5); a pair settled by the split ~10x fewer. Adversarial attention
// whose flows mostly need cut proofs (near-identity top layers) is ~8-9x slower
// per row. LEMON's Preflow on the same pairs: ~40x (ViT-B) to ~300x
// (BERT-base) slower.
// Pairs are independent: parallelise over them with one AttentionFlow per
// thread.
//
// Measured and not used: warm-starting the max flows of one output row (keep
// the flow between sources; the earlier sources' inflow, merged into one
// extra root, feeds the next source, which is exact by the cut argument) is
// ~3x SLOWER on structured attention (ViT-B/16 CLS row 156 vs 60 ms, full
// matrix 27.6 vs 8.1 s; BERT-base CLS row 1.48 vs 0.50 s; per pair 2.4k vs
// 2.0k augmenting paths and 5.1 BFS phases vs 1). Each source's
// flow is 80-100% of all the flow the output node can send, down that
// source's own column, so nearly all of it is re-routed from the middle
// layers every time. A greedy top-down preflow steered by per-node upper
// bounds of what can still reach the source delivers only ~45% of the bound
// (the rest sticks above the bottleneck layers), so it saves no search either.
// Widest-first arc order (each row's K widest arcs, capacity descending, ties
// by index, before the rest in index order; a partial sort per row at
// construction) barely changes the paths: ViT-B/16 CLS row 2,015 augmenting
// paths per pair with the diagonal first, 1,969 with K = 4, 1,872 with
// K = 16, at 69.5 / 70.4 / 75.4 ms. The flow has to fan out over thousands of
// narrow arcs below the bottleneck layers whatever the order; the diagonal is
// already the widest arc of most rows. The split the other way round (one
// flow from the output into layer b per output row, each source searching the
// lower layers fed by it), which would serve a single row, does not pay: on
// the ViT-B/16 CLS row it certifies 1% of the pairs for b <= 4, and all of
// them for b >= 6, where the lower search costs what the whole pair does
// (52-62 vs 59-66 ms for the row).
#ifndef ATTNROLL_SERVER_ANALYSIS_ATTENTION_FLOW_H_
#define ATTNROLL_SERVER_ANALYSIS_ATTENTION_FLOW_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "server/analysis/types.h"

namespace attnroll::analysis {

class AttentionFlow {
 public:
  // `layers` = At_1..At_L, all m x m, finite and non-negative (rows need not
  // sum to 1: the bound uses the actual sums). NOT copied: `layers` must
  // outlive this object and must not change while it is used. Several
  // AttentionFlow objects over the same `layers` may run in different threads
  // (the input is only read; every object has its own scratch). One object is
  // not thread-safe. The scratch (8 L m^2 bytes of flows plus small per-node
  // arrays, see WorkingBytes) is allocated here and reused by every call, so
  // a worker should keep one object for all the pairs it computes. The first
  // time a source comes a second time, the split certificate's two smaller
  // solvers are built (copies of the layers and their own scratch: 1.4
  // times as much again; WorkingBytes counts them), and m more doubles per source seen
  // twice.
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
    bool split = false;        // ... certified by the split (no search of its own)
  };
  const Stats& last_stats() const { return stats_; }

  // Upper bound of the bytes an object for (num_layers, m) holds: the flows
  // (8 L m^2) plus lists that grow with the arcs carrying flow in one pair
  // (in the worst case every arc: 12 L m^2 more; typically a few percent),
  // and, when it computes pairs of several sinks (`several_sinks`: a source
  // may come twice), the split certificate's solvers and layer copies (about
  // 1.4 times as much again).
  static int64_t WorkingBytes(int num_layers, int m, bool several_sinks);

 private:
  struct Arc {
    int head;      // node the arc leads to
    double* flow;  // its flow (for a backward arc: the forward arc's flow)
    double cap;    // capacity of a forward arc; -1 for a backward arc
  };
  double Solve(int source, int sink);
  // Solve with `bound` for the root's demand, done within `tol` of it, and
  // the arcs (1, k) -> (0, source) of capacity dcap[k] (nullptr: At_1[k,
  // source]). With dcap: phase 0 only (a BFS would read At_1), so the result
  // is a flow, not always the max flow.
  double SolveWith(int source, int sink, const double* dcap, double bound, double tol);
  bool TrySplit(int source, int sink, double* value);
  bool Bfs(int src, int snk);
  bool NextArc(int v, int snk, Arc* arc);
  double BlockingFlow(int src, int snk, double limit, double tol);
  double LeafPush(int v, int snk, double limit, double tol);
  void BuildBack();
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
  std::vector<float> at1t_;                // At_1 transposed
  std::vector<float> diag_;                // At_l[i, i] at (l - 1) m + i
  std::vector<double> dcap_, dflow_;       // per pair: arcs (1, j) -> (0, source)
  bool back_valid_ = true;                 // back_ lists kept up to date
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
  // Split certificate (see TrySplit): layer split_ (0: off), per source its
  // uses and, from the second, a flow from (0, source) into layer split_.
  int split_ = 0;
  std::vector<int> uses_;
  std::vector<std::vector<double>> split_in_;
  std::vector<double> split_in_sum_;
  std::vector<MatrixF> lower_layers_, upper_layers_;
  std::unique_ptr<AttentionFlow> lower_, upper_;
  int64_t split_tries_ = 0, split_hits_ = 0;
};

// Estimated work of `num_sinks` output rows (num_sinks * m max flows) on L
// layers of m tokens, for refusing requests above a configured limit: one
// scan of the whole graph (L m^2 arcs) per pair, i.e. L m^3 per row. One unit
// is about a nanosecond of one core on this machine's class of CPU, so
// units * 1e-9 ~ core-seconds. Measured against it: structured attention
// (every pair at its bound) runs at ~0.5x the estimate for ViT-B (m=197) and
// ~0.2x for BERT-base (m=512); i.i.d. attention ~0.2x; adversarial attention
// where most pairs need a cut proof ~3x (ViT-B).
double EstimateFlowCost(int num_layers, int m, int num_sinks);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_ATTENTION_FLOW_H_
