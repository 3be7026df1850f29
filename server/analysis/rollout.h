// Attention rollout (Abnar & Zuidema 2020) for one sequence, folded layer by
// layer as the attention arrives. Conventions: docs/conventions.md, "Rollout".
//
//   F_l  = fuse_h(A[l, h])                          (mean / max / min / weighted)
//   At_l = rownorm((1 - a) F_l + a I)               (a = residual, default 0.5)
//   R_first = At_first,  R_l = At_l R_{l-1}         (layers [first, last])
//
// Two algorithms give the same rows:
//   chain: keep R (m x m) and multiply each arriving layer in: O(L m^3).
//   row:   keep the At_l, and at the end push the k wanted rows back from the
//          last layer: v <- v At_l, O(L k m^2) time but O(L m^2) memory.
// ChooseRolloutPath picks one by a cost model; per-layer output needs chain.
#ifndef ATTNROLL_SERVER_ANALYSIS_ROLLOUT_H_
#define ATTNROLL_SERVER_ANALYSIS_ROLLOUT_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/analysis/buffers.h"
#include "server/analysis/fuse_kernels.h"
#include "server/analysis/head_fusion.h"
#include "server/analysis/pruning.h"
#include "server/analysis/readout.h"
#include "server/analysis/types.h"

namespace attnroll::analysis {

struct RolloutSpec {
  Fusion fusion = Fusion::kMean;
  std::vector<float> head_weights;  // kWeighted: one per head
  float residual = 0.5f;
  bool renormalize = true;
  int first_layer = 0;
  int last_layer = -1;  // inclusive; -1 => the last layer
  bool per_layer = false;
  ReadoutSpec readout;
  PruneSpec prune;
  // Gradient-weighted rollout. kChefer: At = I + fuse(max(0, G A)), rows
  // normalised only if grad_row_normalize (residual/renormalize unused).
  // kVitExplain: F = max(0, fuse(G A)), then the ordinary residual.
  GradientRule gradient = GradientRule::kNone;
  bool grad_row_normalize = false;
  // Causal (decoder-only) model: every At_l is lower-triangular. The entries
  // above the diagonal (validated to be within the row-sum tolerance) are set
  // to 0 and the products use triangular kernels (half the work).
  bool causal = false;
  // fusion == kNone: every head is rolled out on its own chain; the maps get a
  // leading H axis, and Finish also returns their aggregate by this fusion
  // (mean, max, min, or weighted with head_weights).
  Fusion head_aggregate = Fusion::kMean;
};

enum class RolloutPath { kRow, kChain };
const char* RolloutPathName(RolloutPath path);

// Checks options against the pass shape (num_layers, num_heads) and a sequence
// of m valid tokens. Messages name the field, the expected and the seen value;
// `root` names the options ("rollout.layers: expected ...", "flow.layers: ...").
absl::Status ValidateRolloutSpec(const RolloutSpec& spec, int num_layers, int num_heads, int m,
                                 absl::string_view root = "rollout");

// Resolves last_layer = -1 against num_layers.
int LastLayer(const RolloutSpec& spec, int num_layers);

// The cheaper algorithm for these options on a sequence of m tokens.
RolloutPath ChooseRolloutPath(const RolloutSpec& spec, int num_layers, int m);

// Upper bound of the bytes a SequenceRollout allocates (for admission control).
int64_t RolloutWorkingBytes(const RolloutSpec& spec, int num_layers, int num_heads, int m,
                            RolloutPath path);

class SequenceRollout {
 public:
  // `spec` must have passed ValidateRolloutSpec for (num_layers, num_heads, m).
  // `keep_layers` (row path): keep every At_l of the range for TakeLayers
  // (attention flow); otherwise only what the read-out needs is kept.
  SequenceRollout(const RolloutSpec& spec, int num_layers, int num_heads, int m, RolloutPath path,
                  bool keep_layers = false);

  // Layers outside [first, last] need not be added (they are ignored).
  bool WantsLayer(int layer) const { return layer >= first_ && layer <= last_; }

  // Adds rows [row0, row0 + a.rows()) of head `head` of layer `layer`. Layers
  // come in increasing order; within a layer, each strip of rows gets heads
  // 0..H-1 in order. EndLayer(layer) follows the layer's last rows. With
  // `stats`, fills one RowStats per row in the same pass (upper_max when
  // `upper`) and returns true; returns false (nothing filled) for a layer
  // outside the range.
  bool AddHeadRows(int layer, int head, int row0, const ConstMatrixView& a,
                   const ConstMatrixView* gradient = nullptr, RowStats* stats = nullptr,
                   bool upper = false);
  // `residual_weights` (m values, may be null): per-query residual weights of
  // this layer, replacing spec.residual (not used by the Chefer rule).
  // `rows_ended`: EndRows finished every row of the layer (the wire path).
  void EndLayer(int layer, const float* residual_weights = nullptr, bool rows_ended = false);

  // Whether AddWireHeads and EndRows apply: no gradient rule and no pruning
  // (nothing needs a layer's whole fused matrix before its residual).
  bool wire_path() const { return wire_path_; }
  // Heads [head, head + count) of `layer` straight from the wire: rows
  // [row0, row0 + rows) of each (see HeadFuser::AddWireRows; heads come in
  // order within each strip of rows). Returns whether `stats` (head g, row r
  // at stats[g * stats_stride + r]) were filled: false for a layer outside
  // the range, and for the last layer of a row-path read-out of rows, of
  // which only the wanted rows are fused.
  bool AddWireHeads(int layer, int head, int count, WireType type, const WireRows* in, int row0,
                    int rows, RowStats* stats, int stats_stride);
  // Every head of rows [row0, row0 + rows) of `layer` is in (wire path): the
  // residual and renormalisation of those rows, while they are in cache.
  // `residual_weights` as for EndLayer. EndLayer(layer, ..., true) follows
  // once every row is ended. Strips of rows may be added and ended from
  // several threads at once once the layer's first strip has been added
  // (which allocates the layer's matrix): each touches only its own rows.
  void EndRows(int layer, int row0, int rows, const float* residual_weights);

  // A whole m x m head; ends the layer after its last head.
  void AddHead(int layer, int head, const ConstMatrixView& a,
               const ConstMatrixView* gradient = nullptr);

  // The maps, once every wanted layer is complete: [k, map...], or
  // [num_layers_in_range, k, map...] with per_layer; with fusion kNone a
  // leading [H] axis, and `aggregate` (if given) gets the maps' aggregate.
  Maps Finish(Maps* aggregate = nullptr);

  // Row path with keep_layers, instead of Finish: the residual-corrected
  // At_l of the range, in order (what attention flow runs on).
  std::vector<MatrixF> TakeLayers();

  RolloutPath path() const { return path_; }
  // Rows that pruning emptied (and gave their diagonal), over all layers.
  int64_t emptied_rows() const { return emptied_rows_; }
  // Gradient rules: the layers (in order) whose gradient-weighted fused matrix
  // was zero everywhere before the residual (an all-zero gradient, or no
  // positive G * A): they add nothing to the map. Head-specific rollout: the
  // layers that are zero for every head.
  const std::vector<int>& zero_layers() const { return zero_layers_; }
  // Maps written by Finish with no mass (every value <= 0 before scaling).
  int64_t zero_maps() const { return zero_maps_; }

 private:
  void FoldLayer(int layer, bool rows_done);
  Maps FinishPerHead(Maps* aggregate);
  void AppendReadout(const Eigen::Ref<const MatrixF>& r);

  RolloutSpec spec_;
  int first_, last_, m_, num_heads_;
  RolloutPath path_;
  bool keep_layers_;
  bool wire_path_;       // no gradient rule, no pruning
  bool lower_only_;      // causal wire path: only j <= i of each fused row is computed
  bool top_rows_;        // row path of rows: only the last layer's wanted rows are kept
  std::vector<int> slot_;  // top_rows_: row i -> its place in the read-out, or -1
  HeadFuser fuser_;
  bool have_r_ = false;
  int64_t emptied_rows_ = 0;
  std::vector<int> zero_layers_;
  int64_t zero_maps_ = 0;
  Buffer r_, scratch_;              // chain: R and the product buffer (m x m)
  std::vector<Buffer> layers_;      // row: At_l of the range below the last (all with keep_layers)
  MatrixF top_;                     // row: the read-out rows of At_last (or its column mean)
  std::vector<float> per_layer_;    // chain + per_layer: read-outs so far
  std::vector<SequenceRollout> per_head_;  // fusion kNone: one chain per head
};

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_ROLLOUT_H_
