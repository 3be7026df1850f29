#include "server/analysis/drift.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/analysis/compare.h"

namespace attnroll::analysis {

const char* DriftMetricName(DriftMetric m) {
  switch (m) {
    case DriftMetric::kJsDivergence: return "js_divergence";
    case DriftMetric::kL1: return "l1";
    case DriftMetric::kEmd: return "emd";
    case DriftMetric::kComShift: return "com_shift";
    case DriftMetric::kRegionShareBase: return "region_share_base";
    case DriftMetric::kRegionShareLive: return "region_share_live";
    case DriftMetric::kRegionShareDelta: return "region_share_delta";
    case DriftMetric::kEntropyW1: return "entropy_w1";
    case DriftMetric::kPeakW1: return "peak_w1";
    case DriftMetric::kRegionShareW1: return "region_share_w1";
  }
  return "";
}

std::optional<double> HistogramW1(const std::array<int64_t, kHistogramBins>& a,
                                  const std::array<int64_t, kHistogramBins>& b) {
  int64_t ta = 0, tb = 0;
  for (int i = 0; i < kHistogramBins; ++i) {
    ta += a[i];
    tb += b[i];
  }
  if (ta <= 0 || tb <= 0) return std::nullopt;
  // CDFs from exact integer prefix sums; the gap between consecutive bin
  // centres is 1 / bins, and the last bin's CDF difference is 0.
  double w1 = 0;
  int64_t ca = 0, cb = 0;
  for (int i = 0; i + 1 < kHistogramBins; ++i) {
    ca += a[i];
    cb += b[i];
    w1 += std::abs(static_cast<double>(ca) / static_cast<double>(ta) -
                   static_cast<double>(cb) / static_cast<double>(tb));
  }
  return w1 / kHistogramBins;
}

absl::StatusOr<Drift> ComputeDrift(const BaselineView& baseline, const WindowSummary& live,
                                   const DriftSpec& spec) {
  Drift out;
  auto undefined = [&out](DriftMetric m, std::string note) {
    out.values[static_cast<int>(m)] = {std::nullopt, std::move(note)};
  };
  auto set = [&out](DriftMetric m, double v) { out.values[static_cast<int>(m)] = {v + 0.0, ""}; };
  const bool has_region = !spec.region.empty();
  if (live.samples == 0 || live.mean_map.empty()) {
    for (int m = 0; m < kNumDriftMetrics; ++m) {
      undefined(static_cast<DriftMetric>(m), "no sample in the window yet");
    }
    return out;
  }
  if (baseline.mean_map.size() != live.mean_map.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "baseline: its maps have ", baseline.mean_map.size(), " values, the live maps ",
        live.mean_map.size()));
  }
  CompareSpec cs;
  cs.grid_h = spec.grid_h;
  cs.grid_w = spec.grid_w;
  cs.region = spec.region;
  cs.ssim_window = 3;
  absl::StatusOr<Comparison> c = CompareMaps(baseline.mean_map, live.mean_map, cs);
  if (!c.ok()) return c.status();
  set(DriftMetric::kJsDivergence, c->js_divergence);
  set(DriftMetric::kL1, c->l1);
  if (c->emd.has_value()) {
    set(DriftMetric::kEmd, *c->emd);
  } else {
    undefined(DriftMetric::kEmd, c->emd_note);
  }
  if (c->com_shift.has_value()) {
    set(DriftMetric::kComShift, *c->com_shift);
  } else {
    undefined(DriftMetric::kComShift, c->com_note);
  }
  if (has_region) {
    set(DriftMetric::kRegionShareBase, *c->region_share_a);
    set(DriftMetric::kRegionShareLive, *c->region_share_b);
    set(DriftMetric::kRegionShareDelta, *c->region_share_b - *c->region_share_a);
  } else {
    for (DriftMetric m : {DriftMetric::kRegionShareBase, DriftMetric::kRegionShareLive,
                          DriftMetric::kRegionShareDelta}) {
      undefined(m, "the baseline has no region");
    }
  }
  const DriftMetric w1[] = {DriftMetric::kEntropyW1, DriftMetric::kPeakW1, DriftMetric::kRegionShareW1};
  for (int s = 0; s < kNumSampleMetrics; ++s) {
    if (baseline.histograms == nullptr) {
      undefined(w1[s], "the baseline has no per-pass distributions (made from an audit report)");
      continue;
    }
    if (s == static_cast<int>(SampleMetric::kRegionShare) && !has_region) {
      undefined(w1[s], "the baseline has no region");
      continue;
    }
    std::optional<double> w = HistogramW1((*baseline.histograms)[s], live.scalars[s].histogram);
    if (w.has_value()) {
      set(w1[s], *w);
    } else {
      undefined(w1[s], live.scalars[s].count == 0
                           ? "no sample in the window has this statistic yet"
                           : "the baseline has no sample with this statistic");
    }
  }
  return out;
}

}  // namespace attnroll::analysis
