// Drift of a model's live window against its pinned baseline
// (docs/conventions.md, "Live monitoring"). Pure math: the mean maps are
// compared with CompareMaps (compare.h: the same definitions as Compare and
// the audit), the per-sample distributions by the 1-D Wasserstein distance of
// their histograms.
//
// Numbers (each optional: undefined with a note, never NaN):
//   js_divergence       JS(p_base, p_live) of the two mean maps, nats
//   l1                  sum |p_base - p_live|
//   emd                 Wasserstein-1 of the mean maps on the grid, cells
//   com_shift           |com(p_live) - com(p_base)|, cells
//   region_share_base   share of p_base inside the region
//   region_share_live   share of p_live inside the region
//   region_share_delta  region_share_live - region_share_base
//   <scalar>_w1         for entropy, peak, region_share: W1 between the
//                       window's histogram and the baseline's, both
//                       normalised, bin centres (b + 0.5) / bins as the
//                       positions (= scipy.stats.wasserstein_distance(c, c,
//                       h_base, h_live)); within one bin width (0.01) of the W1
//                       of the unbinned values.
// Since every map is normalised before it is averaged, the mean map of a mix
// of traffic is the mix of the mean maps: after a fraction f of the window
// moved from maps with mean p to maps with mean q, the live mean is
// (1 - f) p + f q, so emd = f * EMD(p, q), com_shift = f * |com(q) - com(p)|
// and region_share_delta = f * (share(q) - share(p)) exactly (the EMD by the
// Kantorovich-Rubinstein duality); JS grows monotonically with f.
#ifndef ATTNROLL_SERVER_ANALYSIS_DRIFT_H_
#define ATTNROLL_SERVER_ANALYSIS_DRIFT_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/analysis/monitor_window.h"

namespace attnroll::analysis {

// W1 between two histograms of kHistogramBins bins on [0, 1] (each divided by
// its own total): sum_b |CDF_a(b) - CDF_b(b)| / bins. nullopt when either is empty.
std::optional<double> HistogramW1(const std::array<int64_t, kHistogramBins>& a,
                                  const std::array<int64_t, kHistogramBins>& b);

// What a baseline holds for the comparison.
struct BaselineView {
  absl::Span<const float> mean_map;  // length n, sums to ~1
  // Per-sample histograms (live-recorded baselines); nullptr when absent.
  const std::array<std::array<int64_t, kHistogramBins>, kNumSampleMetrics>* histograms = nullptr;
};

struct DriftSpec {
  int grid_h = 0, grid_w = 0;  // both 0: flat maps (no EMD, no centre of mass)
  std::vector<uint8_t> region;  // empty: no region shares
};

struct DriftValue {
  std::optional<double> value;
  std::string note;  // why undefined
};

// Names of the numbers, in export order.
inline constexpr int kNumDriftMetrics = 10;
enum class DriftMetric : int {
  kJsDivergence = 0,
  kL1,
  kEmd,
  kComShift,
  kRegionShareBase,
  kRegionShareLive,
  kRegionShareDelta,
  kEntropyW1,
  kPeakW1,
  kRegionShareW1,
};
const char* DriftMetricName(DriftMetric m);

struct Drift {
  std::array<DriftValue, kNumDriftMetrics> values;
  const DriftValue& operator[](DriftMetric m) const { return values[static_cast<int>(m)]; }
};

// Compares the live window's summary with the baseline. INVALID_ARGUMENT when
// the baseline's map length differs from the window's, or the spec's grid or
// region does not fit it. A window with no sample: every value undefined.
absl::StatusOr<Drift> ComputeDrift(const BaselineView& baseline, const WindowSummary& live,
                                   const DriftSpec& spec);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_DRIFT_H_
