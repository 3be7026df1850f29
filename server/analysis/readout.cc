#include "server/analysis/readout.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace attnroll::analysis {

absl::Status ValidateReadout(const ReadoutSpec& spec, int m) {
  if (spec.prefix < 0 || spec.prefix >= m) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout.prefix_tokens: expected 0 <= P < valid length ", m, ", got ", spec.prefix));
  }
  if ((spec.grid_h == 0) != (spec.grid_w == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout.grid: height and width must both be set, got ", spec.grid_h, "x", spec.grid_w));
  }
  if (spec.grid_h != 0 && static_cast<int64_t>(spec.grid_h) * spec.grid_w != m - spec.prefix) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout.grid: ", spec.grid_h, "x", spec.grid_w, " = ",
        static_cast<int64_t>(spec.grid_h) * spec.grid_w,
        " cells, expected valid length - prefix_tokens = ", m, " - ", spec.prefix, " = ",
        m - spec.prefix));
  }
  if (static_cast<int>(spec.mean_of_rows) + static_cast<int>(spec.last_row) +
          static_cast<int>(!spec.rows.empty()) > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "readout: expected one of rows, mean_of_rows and last_row, got ", spec.rows.size(), " rows",
        spec.mean_of_rows ? " and mean_of_rows" : "", spec.last_row ? " and last_row" : ""));
  }
  if (spec.sink < 0 || spec.sink >= m) {
    return absl::InvalidArgumentError(absl::StrCat(
        "readout.sink_tokens: expected 0 <= sink < valid length ", m, ", got ", spec.sink));
  }
  for (int r : spec.rows) {
    if (r < 0 || r >= m) {
      return absl::InvalidArgumentError(absl::StrCat(
          "readout.rows: row ", r, " out of range, expected 0 <= row < valid length ", m));
    }
  }
  return absl::OkStatus();
}

std::vector<int> ResolvedRows(const ReadoutSpec& spec, int m) {
  if (spec.mean_of_rows) return {};
  if (spec.last_row) return {m - 1};
  if (spec.rows.empty()) return {0};
  return spec.rows;
}

int NumMaps(const ReadoutSpec& spec) {
  return spec.mean_of_rows ? 1 : std::max<int>(1, static_cast<int>(spec.rows.size()));
}

std::vector<int64_t> MapShape(const ReadoutSpec& spec, int m) {
  if (spec.grid_h != 0) return {spec.grid_h, spec.grid_w};
  return {m - spec.prefix};
}

bool WriteMap(const ReadoutSpec& spec, const Eigen::Ref<const RowVectorF>& row, float* out) {
  const Eigen::Index len = row.size() - spec.prefix;
  Eigen::Map<RowVectorF> dst(out, len);
  if (spec.sink > 0) {
    // Sink tokens take mass by construction in causal models: drop them and
    // renormalise the rest of the row.
    RowVectorF kept = row;
    kept.head(spec.sink).setZero();
    const double s = kept.cast<double>().sum();
    if (s > 0.0) kept *= static_cast<float>(1.0 / s);
    dst = kept.tail(len);
  } else {
    dst = row.tail(len);
  }
  const bool has_mass = dst.cast<double>().sum() > 0.0;
  switch (spec.scaling) {
    case Scaling::kNone:
      break;
    case Scaling::kMax: {
      const float mx = dst.maxCoeff();
      if (mx > 0.0f) dst /= mx;
      break;
    }
    case Scaling::kMinMax: {
      const float lo = dst.minCoeff(), hi = dst.maxCoeff();
      if (hi > lo) {
        dst = (dst.array() - lo) / (hi - lo);
      } else {
        dst.setZero();
      }
      break;
    }
    case Scaling::kSum: {
      const double s = dst.cast<double>().sum();
      if (s > 0.0) dst *= static_cast<float>(1.0 / s);
      break;
    }
  }
  return has_mass;
}

}  // namespace attnroll::analysis
