#include "server/session/analysis_options.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/runtime/refusal.h"

namespace attnroll::session {

absl::StatusOr<analysis::RolloutSpec> ToRolloutSpec(const v1::RolloutOptions& options,
                                                    const v1::Layout& layout, absl::string_view root,
                                                    int max_rows) {
  analysis::RolloutSpec spec;
  auto fusion = [root](int value, absl::string_view field, analysis::Fusion* out) {
    switch (value) {
      case v1::HEAD_FUSION_MEAN: *out = analysis::Fusion::kMean; break;
      case v1::HEAD_FUSION_MAX: *out = analysis::Fusion::kMax; break;
      case v1::HEAD_FUSION_MIN: *out = analysis::Fusion::kMin; break;
      case v1::HEAD_FUSION_WEIGHTED: *out = analysis::Fusion::kWeighted; break;
      case v1::HEAD_FUSION_NONE: *out = analysis::Fusion::kNone; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            root, ".", field, ": expected MEAN, MAX, MIN, WEIGHTED or NONE, got ", value));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = fusion(options.fusion(), "fusion", &spec.fusion); !s.ok()) return s;
  if (absl::Status s = fusion(options.head_aggregate(), "head_aggregate", &spec.head_aggregate);
      !s.ok()) {
    return s;
  }
  spec.head_weights.assign(options.head_weights().begin(), options.head_weights().end());
  if (options.has_residual()) spec.residual = options.residual();
  spec.renormalize = !options.no_renormalize();
  if (options.has_layers()) {
    constexpr uint32_t kMax = std::numeric_limits<int>::max();
    if (options.layers().first() > kMax || options.layers().last() > kMax) {
      return absl::InvalidArgumentError(absl::StrCat(
          root, ".layers: expected layers < num_layers = ", layout.num_layers(), ", got ",
          options.layers().first(), ":", options.layers().last()));
    }
    spec.first_layer = static_cast<int>(options.layers().first());
    spec.last_layer = static_cast<int>(options.layers().last());
  }
  spec.per_layer = options.per_layer();

  const v1::ReadOut& ro = options.readout();
  if (ro.rows_size() > max_rows) {
    return runtime::Refused(runtime::Refusal::kLimits,
                            absl::StrCat(root, ".readout.rows: ", ro.rows_size(),
                                         " rows, over the server's max_rows of ", max_rows));
  }
  {
    std::vector<uint32_t> sorted(ro.rows().begin(), ro.rows().end());
    std::sort(sorted.begin(), sorted.end());
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    if (dup != sorted.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(root, ".readout.rows: expected distinct rows, got row ", *dup, " twice"));
    }
  }
  for (uint32_t r : ro.rows()) {
    if (r >= layout.num_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat(
          root, ".readout.rows: row ", r, " out of range, expected 0 <= row < num_tokens = ",
          layout.num_tokens()));
    }
    spec.readout.rows.push_back(static_cast<int>(r));
  }
  spec.readout.mean_of_rows = ro.mean_of_rows();
  spec.readout.last_row = ro.last_row();
  if (ro.sink_tokens() >= layout.num_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        root, ".readout.sink_tokens: expected sink < num_tokens = ", layout.num_tokens(), ", got ",
        ro.sink_tokens()));
  }
  spec.readout.sink = static_cast<int>(ro.sink_tokens());
  const v1::Pruning& pr = options.pruning();
  if (pr.top_k() > layout.num_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        root, ".pruning.top_k: expected k <= num_tokens = ", layout.num_tokens(), ", got ", pr.top_k()));
  }
  spec.prune.discard_ratio = pr.discard_ratio();
  spec.prune.threshold = pr.threshold();
  spec.prune.mass = pr.mass();
  spec.prune.top_k = static_cast<int>(pr.top_k());
  auto place = [root](v1::PruningPlacement value, absl::string_view field, analysis::PrunePlace published,
                      analysis::PrunePlace* out) {
    switch (value) {
      case v1::PRUNING_PLACEMENT_UNSPECIFIED: *out = published; break;
      case v1::PRUNING_PLACEMENT_BEFORE_RESIDUAL: *out = analysis::PrunePlace::kBeforeResidual; break;
      case v1::PRUNING_PLACEMENT_AFTER_RESIDUAL: *out = analysis::PrunePlace::kAfterResidual; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            root, ".pruning.", field, ": expected UNSPECIFIED, BEFORE_RESIDUAL or AFTER_RESIDUAL, got ",
            static_cast<int>(value)));
    }
    return absl::OkStatus();
  };
  using analysis::PrunePlace;
  for (absl::Status s :
       {place(pr.discard_ratio_placement(), "discard_ratio_placement", PrunePlace::kBeforeResidual,
              &spec.prune.discard_at),
        place(pr.threshold_placement(), "threshold_placement", PrunePlace::kBeforeResidual,
              &spec.prune.threshold_at),
        place(pr.mass_placement(), "mass_placement", PrunePlace::kBeforeResidual, &spec.prune.mass_at),
        place(pr.top_k_placement(), "top_k_placement", PrunePlace::kAfterResidual, &spec.prune.top_k_at)}) {
    if (!s.ok()) return s;
  }
  spec.prune.renormalize_before_residual = pr.renormalize_before_residual();
  if (options.has_gradient()) {
    switch (options.gradient().rule()) {
      case v1::GRADIENT_RULE_CHEFER: spec.gradient = analysis::GradientRule::kChefer; break;
      case v1::GRADIENT_RULE_VIT_EXPLAIN: spec.gradient = analysis::GradientRule::kVitExplain; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            root, ".gradient.rule: expected CHEFER or VIT_EXPLAIN, got ",
            static_cast<int>(options.gradient().rule())));
    }
    spec.grad_row_normalize = options.gradient().row_normalize();
  }
  switch (ro.scaling()) {
    case v1::SCALING_NONE: spec.readout.scaling = analysis::Scaling::kNone; break;
    case v1::SCALING_MAX: spec.readout.scaling = analysis::Scaling::kMax; break;
    case v1::SCALING_MINMAX: spec.readout.scaling = analysis::Scaling::kMinMax; break;
    case v1::SCALING_SUM: spec.readout.scaling = analysis::Scaling::kSum; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          root, ".readout.scaling: expected NONE, MAX, MINMAX or SUM, got ", static_cast<int>(ro.scaling())));
  }
  // The layout's token counts are bounded by max_tokens before we get here.
  spec.readout.prefix = static_cast<int>(layout.prefix_tokens());
  spec.readout.grid_h = static_cast<int>(layout.grid().height());
  spec.readout.grid_w = static_cast<int>(layout.grid().width());
  spec.causal = layout.causal();
  return spec;
}

absl::StatusOr<analysis::RolloutSpec> ToFlowGraphSpec(const v1::FlowOptions& options,
                                                      const v1::Layout& layout, int max_rows) {
  if (options.fusion() == v1::HEAD_FUSION_NONE) {
    return absl::InvalidArgumentError("flow.fusion: expected MEAN, MAX, MIN or WEIGHTED, got NONE");
  }
  if (options.readout().mean_of_rows()) {
    return absl::InvalidArgumentError(
        "flow.readout.mean_of_rows: flow maps are per output token; ask for rows (or all_rows)");
  }
  if (options.all_rows() && (options.readout().rows_size() > 0 || options.readout().last_row())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flow.all_rows: expected no readout rows (or last_row) with all_rows, got ",
        options.readout().rows_size(), " rows", options.readout().last_row() ? " and last_row" : ""));
  }
  v1::RolloutOptions graph;
  graph.set_fusion(options.fusion());
  *graph.mutable_head_weights() = options.head_weights();
  if (options.has_residual()) graph.set_residual(options.residual());
  graph.set_no_renormalize(options.no_renormalize());
  if (options.has_layers()) *graph.mutable_layers() = options.layers();
  *graph.mutable_readout() = options.readout();
  return ToRolloutSpec(graph, layout, "flow", max_rows);
}

}  // namespace attnroll::session
