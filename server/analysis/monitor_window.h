// Windowed statistics of the saliency maps a model produced (live monitoring;
// docs/conventions.md, "Live monitoring"). Pure math: absl + std. No gRPC, no
// threads, no I/O, no clock: the caller passes the time.
//
// A sample is one map (length n, finite, >= 0, positive sum). What is kept of
// it, exactly as the audit report keeps its maps (audit_report.h):
//   - its normalised map p = x / sum(x), each value rounded once to the
//     integer round(p_i * 2^62) and added to 128-bit running sums;
//   - three per-sample scalars, each in [0, 1]:
//       entropy       H(p) / ln(n)   (0 log 0 = 0; 0 when n = 1)
//       peak          max_i p_i
//       region_share  sum of p_i inside the region (only when the window has a
//                     region mask; samples folded without one do not count)
//     each added to a fixed-point sum (round(v * 2^62), exact mean) and to a
//     histogram of kHistogramBins equal bins on [0, 1] (bin floor(v * bins),
//     v = 1 in the last bin).
// Every statistic is an integer sum, so windows merge by addition and are
// bit-identical whatever the order samples arrive in (tested).
//
// The window. Samples go into the current bucket; the window is the current
// bucket and the buckets - 1 before it. Count windows: a bucket holds
// bucket_samples samples; the sample that finds the current bucket full first
// rotates (the oldest bucket is dropped, an empty one becomes current), so the
// window holds (buckets - 1) * bucket_samples + c samples once it has filled,
// c in [1, bucket_samples] the current bucket's count. Time windows: bucket k
// covers [k * span, (k + 1) * span) seconds; buckets older than buckets - 1
// spans before the current time are dropped (also when nothing arrives: Rotate).
//
// Memory is fixed at construction: buckets * (n * 16 + 3 * (kHistogramBins * 8
// + 24)) bytes plus the merged snapshot, whatever the number of samples.
#ifndef ATTNROLL_SERVER_ANALYSIS_MONITOR_WINDOW_H_
#define ATTNROLL_SERVER_ANALYSIS_MONITOR_WINDOW_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace attnroll::analysis {

inline constexpr int kHistogramBins = 100;

// The per-sample scalars, in this order everywhere (names: SampleMetricName).
enum class SampleMetric : int { kEntropy = 0, kPeak, kRegionShare };
inline constexpr int kNumSampleMetrics = 3;
const char* SampleMetricName(SampleMetric m);  // "entropy", "peak", "region_share"

// Histogram bin of v in [0, 1].
int HistogramBin(double v);

// Exact sums of one set of samples (a bucket, a window, a baseline).
struct WindowSums {
  __extension__ typedef unsigned __int128 Fixed;
  int64_t samples = 0;
  std::vector<Fixed> map;  // n sums of round(p_i * 2^62)
  struct Scalar {
    int64_t count = 0;  // samples where it is defined
    Fixed sum = 0;      // of round(v * 2^62)
    std::array<int64_t, kHistogramBins> histogram{};
  };
  std::array<Scalar, kNumSampleMetrics> scalars{};

  explicit WindowSums(int n = 0) : map(n, 0) {}
  void Clear();
  // this += other (same n).
  void Merge(const WindowSums& other);
};

// What a window (or a set of sums) says, as doubles.
struct ScalarSummary {
  int64_t count = 0;
  double mean = 0;  // exact sum / count (0 when count = 0)
  // From the histogram: quantile q is the centre of the first bin whose
  // cumulative count reaches q * count (0 when count = 0).
  double p10 = 0, p50 = 0, p90 = 0;
  std::array<int64_t, kHistogramBins> histogram{};
};
struct WindowSummary {
  int64_t samples = 0;
  std::vector<float> mean_map;  // sum / 2^62 / samples, fp32; empty when samples = 0
  std::array<ScalarSummary, kNumSampleMetrics> scalars;
};
WindowSummary Summarise(const WindowSums& sums);

// The per-sample scalars of one map (region may be empty: region share undefined).
struct SampleScalars {
  double entropy = 0, peak = 0;
  bool has_region = false;
  double region_share = 0;
};
// INVALID_ARGUMENT for an empty map, a NaN/Inf or negative entry, a zero sum,
// or a region of another length.
absl::StatusOr<SampleScalars> ScalarsOf(absl::Span<const float> map, absl::Span<const uint8_t> region);

struct WindowOptions {
  int map_length = 0;          // n >= 1
  int buckets = 10;            // >= 2
  int64_t bucket_samples = 0;  // count window: > 0; 0 for a time window
  double bucket_seconds = 0;   // time window: > 0; 0 for a count window
};

class MonitorWindow {
 public:
  // INVALID_ARGUMENT for n < 1, buckets < 2, neither or both of bucket_samples
  // and bucket_seconds set, or a non-finite bucket_seconds.
  static absl::StatusOr<MonitorWindow> Create(const WindowOptions& options);

  // Folds one map taken at time `now` (seconds, any origin, non-decreasing
  // for a time window). `region`: the mask (non-zero = inside) or empty.
  // Errors as ScalarsOf plus a map of another length; nothing changes then.
  absl::Status Add(absl::Span<const float> map, absl::Span<const uint8_t> region, double now);

  // Time windows: drops the buckets that fell out of the window at `now`.
  void Rotate(double now);

  // The merged sums of the buckets in the window (at the last Add/Rotate).
  WindowSums Merged() const;

  // Forgets the region-share statistics (the region mask changed).
  void ClearRegion();
  // Forgets everything.
  void Clear();

  const WindowOptions& options() const { return options_; }
  // Samples added since construction (or Clear), in or out of the window.
  int64_t total_samples() const { return total_; }
  // Fixed bytes of the buckets (independent of the samples added).
  int64_t bytes() const;

 private:
  explicit MonitorWindow(const WindowOptions& options);
  WindowSums& Current();
  void AdvanceTo(int64_t bucket_index);

  WindowOptions options_;
  std::vector<WindowSums> buckets_;  // ring
  int current_ = 0;                  // index into buckets_
  int64_t current_index_ = 0;        // time windows: floor(now / span) of the current bucket
  bool started_ = false;
  int64_t total_ = 0;
};

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_MONITOR_WINDOW_H_
