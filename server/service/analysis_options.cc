#include "server/service/analysis_options.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace attnroll::service {

absl::StatusOr<analysis::RolloutSpec> ToRolloutSpec(const v1::RolloutOptions& options,
                                                    const v1::Layout& layout) {
  analysis::RolloutSpec spec;
  switch (options.fusion()) {
    case v1::HEAD_FUSION_MEAN: spec.fusion = analysis::Fusion::kMean; break;
    case v1::HEAD_FUSION_MAX: spec.fusion = analysis::Fusion::kMax; break;
    case v1::HEAD_FUSION_MIN: spec.fusion = analysis::Fusion::kMin; break;
    case v1::HEAD_FUSION_WEIGHTED: spec.fusion = analysis::Fusion::kWeighted; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "rollout.fusion: expected MEAN, MAX, MIN or WEIGHTED, got ", static_cast<int>(options.fusion())));
  }
  spec.head_weights.assign(options.head_weights().begin(), options.head_weights().end());
  if (options.has_residual()) spec.residual = options.residual();
  spec.renormalize = !options.no_renormalize();
  if (options.has_layers()) {
    constexpr uint32_t kMax = std::numeric_limits<int>::max();
    if (options.layers().first() > kMax || options.layers().last() > kMax) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rollout.layers: expected layers < num_layers = ", layout.num_layers(), ", got ",
          options.layers().first(), ":", options.layers().last()));
    }
    spec.first_layer = static_cast<int>(options.layers().first());
    spec.last_layer = static_cast<int>(options.layers().last());
  }
  spec.per_layer = options.per_layer();

  const v1::ReadOut& ro = options.readout();
  for (uint32_t r : ro.rows()) {
    if (r >= layout.num_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "readout.rows: row ", r, " out of range, expected 0 <= row < num_tokens = ",
          layout.num_tokens()));
    }
    spec.readout.rows.push_back(static_cast<int>(r));
  }
  spec.readout.mean_of_rows = ro.mean_of_rows();
  switch (ro.scaling()) {
    case v1::SCALING_NONE: spec.readout.scaling = analysis::Scaling::kNone; break;
    case v1::SCALING_MAX: spec.readout.scaling = analysis::Scaling::kMax; break;
    case v1::SCALING_MINMAX: spec.readout.scaling = analysis::Scaling::kMinMax; break;
    case v1::SCALING_SUM: spec.readout.scaling = analysis::Scaling::kSum; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "readout.scaling: expected NONE, MAX, MINMAX or SUM, got ", static_cast<int>(ro.scaling())));
  }
  // The layout's token counts are bounded by max_tokens before we get here.
  spec.readout.prefix = static_cast<int>(layout.prefix_tokens());
  spec.readout.grid_h = static_cast<int>(layout.grid().height());
  spec.readout.grid_w = static_cast<int>(layout.grid().width());
  return spec;
}

}  // namespace attnroll::service
