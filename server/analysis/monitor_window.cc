#include "server/analysis/monitor_window.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnroll::analysis {
namespace {

constexpr double kFixedScale = 0x1p62;

WindowSums::Fixed ToFixed(double v) {
  // v in [0, 1]: fits in 63 bits.
  return static_cast<WindowSums::Fixed>(static_cast<uint64_t>(std::llround(v * kFixedScale)));
}

double FixedMean(WindowSums::Fixed sum, int64_t count) {
  return count > 0 ? static_cast<double>(sum) / kFixedScale / static_cast<double>(count) : 0.0;
}

double BinCentre(int bin) { return (bin + 0.5) / kHistogramBins; }

// Centre of the first bin whose cumulative count reaches q * count.
double HistogramQuantile(const std::array<int64_t, kHistogramBins>& h, int64_t count, double q) {
  if (count <= 0) return 0;
  const double target = q * static_cast<double>(count);
  int64_t cumulative = 0;
  for (int b = 0; b < kHistogramBins; ++b) {
    cumulative += h[b];
    if (h[b] > 0 && static_cast<double>(cumulative) >= target) return BinCentre(b);
  }
  return BinCentre(kHistogramBins - 1);
}

}  // namespace

const char* SampleMetricName(SampleMetric m) {
  switch (m) {
    case SampleMetric::kEntropy: return "entropy";
    case SampleMetric::kPeak: return "peak";
    case SampleMetric::kRegionShare: return "region_share";
  }
  return "";
}

int HistogramBin(double v) {
  const int b = static_cast<int>(std::floor(v * kHistogramBins));
  return std::clamp(b, 0, kHistogramBins - 1);
}

void WindowSums::Clear() {
  samples = 0;
  std::fill(map.begin(), map.end(), Fixed{0});
  scalars = {};
}

void WindowSums::Merge(const WindowSums& other) {
  samples += other.samples;
  for (size_t i = 0; i < map.size() && i < other.map.size(); ++i) map[i] += other.map[i];
  for (int m = 0; m < kNumSampleMetrics; ++m) {
    scalars[m].count += other.scalars[m].count;
    scalars[m].sum += other.scalars[m].sum;
    for (int b = 0; b < kHistogramBins; ++b) scalars[m].histogram[b] += other.scalars[m].histogram[b];
  }
}

WindowSummary Summarise(const WindowSums& sums) {
  WindowSummary out;
  out.samples = sums.samples;
  if (sums.samples > 0) {
    out.mean_map.resize(sums.map.size());
    for (size_t i = 0; i < sums.map.size(); ++i) {
      out.mean_map[i] = static_cast<float>(FixedMean(sums.map[i], sums.samples));
    }
  }
  for (int m = 0; m < kNumSampleMetrics; ++m) {
    const WindowSums::Scalar& s = sums.scalars[m];
    ScalarSummary& o = out.scalars[m];
    o.count = s.count;
    o.mean = FixedMean(s.sum, s.count);
    o.histogram = s.histogram;
    o.p10 = HistogramQuantile(s.histogram, s.count, 0.1);
    o.p50 = HistogramQuantile(s.histogram, s.count, 0.5);
    o.p90 = HistogramQuantile(s.histogram, s.count, 0.9);
  }
  return out;
}

absl::StatusOr<SampleScalars> ScalarsOf(absl::Span<const float> map, absl::Span<const uint8_t> region) {
  const size_t n = map.size();
  if (n == 0) return absl::InvalidArgumentError("map: expected at least one value, got none");
  if (!region.empty() && region.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("region: expected ", n, " values (the map's length), got ", region.size()));
  }
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = map[i];
    if (!std::isfinite(v) || v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("map[", i, "]: expected a finite value >= 0, got ", v));
    }
    sum += v;
  }
  if (!(sum > 0)) return absl::InvalidArgumentError("map: expected a positive sum, got 0 (no mass)");
  SampleScalars out;
  double entropy = 0, peak = 0, inside = 0;
  for (size_t i = 0; i < n; ++i) {
    const double p = static_cast<double>(map[i]) / sum;
    if (p > 0) entropy -= p * std::log(p);
    peak = std::max(peak, p);
    if (!region.empty() && region[i] != 0) inside += p;
  }
  out.entropy = n > 1 ? std::clamp(entropy / std::log(static_cast<double>(n)), 0.0, 1.0) : 0.0;
  out.peak = std::clamp(peak, 0.0, 1.0);
  out.has_region = !region.empty();
  out.region_share = std::clamp(inside, 0.0, 1.0);
  return out;
}

absl::StatusOr<MonitorWindow> MonitorWindow::Create(const WindowOptions& o) {
  if (o.map_length < 1) {
    return absl::InvalidArgumentError(absl::StrCat("map_length: expected >= 1, got ", o.map_length));
  }
  if (o.buckets < 2) {
    return absl::InvalidArgumentError(absl::StrCat("buckets: expected >= 2, got ", o.buckets));
  }
  const bool count = o.bucket_samples > 0, time = o.bucket_seconds > 0;
  if (o.bucket_samples < 0 || o.bucket_seconds < 0 || !std::isfinite(o.bucket_seconds) || count == time) {
    return absl::InvalidArgumentError(absl::StrCat(
        "window: expected bucket_samples > 0 (a count window) or bucket_seconds > 0 (a time "
        "window), exactly one, got bucket_samples ",
        o.bucket_samples, " and bucket_seconds ", o.bucket_seconds));
  }
  return MonitorWindow(o);
}

MonitorWindow::MonitorWindow(const WindowOptions& options) : options_(options) {
  buckets_.assign(options_.buckets, WindowSums(options_.map_length));
}

int64_t MonitorWindow::bytes() const {
  return static_cast<int64_t>(buckets_.size()) *
         static_cast<int64_t>(options_.map_length * sizeof(WindowSums::Fixed) + sizeof(WindowSums));
}

void MonitorWindow::AdvanceTo(int64_t index) {
  // Time windows: the current bucket becomes `index`; every bucket between is empty.
  const int64_t steps = std::min<int64_t>(index - current_index_, options_.buckets);
  for (int64_t s = 0; s < steps; ++s) {
    current_ = (current_ + 1) % options_.buckets;
    buckets_[current_].Clear();
  }
  current_index_ = index;
}

void MonitorWindow::Rotate(double now) {
  if (options_.bucket_seconds <= 0) return;
  const int64_t index = static_cast<int64_t>(std::floor(now / options_.bucket_seconds));
  if (!started_) {
    started_ = true;
    current_index_ = index;
    return;
  }
  if (index > current_index_) AdvanceTo(index);
}

WindowSums& MonitorWindow::Current() { return buckets_[current_]; }

absl::Status MonitorWindow::Add(absl::Span<const float> map, absl::Span<const uint8_t> region, double now) {
  if (static_cast<int>(map.size()) != options_.map_length) {
    return absl::InvalidArgumentError(absl::StrCat("map: expected ", options_.map_length,
                                                   " values (the window's map length), got ", map.size()));
  }
  absl::StatusOr<SampleScalars> scalars = ScalarsOf(map, region);
  if (!scalars.ok()) return scalars.status();
  if (options_.bucket_seconds > 0) {
    Rotate(now);
  } else if (Current().samples >= options_.bucket_samples) {
    current_ = (current_ + 1) % options_.buckets;
    buckets_[current_].Clear();
  }
  WindowSums& b = Current();
  double sum = 0;
  for (float v : map) sum += v;
  for (size_t i = 0; i < map.size(); ++i) b.map[i] += ToFixed(static_cast<double>(map[i]) / sum);
  ++b.samples;
  auto put = [&b](SampleMetric m, double v) {
    WindowSums::Scalar& s = b.scalars[static_cast<int>(m)];
    ++s.count;
    s.sum += ToFixed(v);
    ++s.histogram[HistogramBin(v)];
  };
  put(SampleMetric::kEntropy, scalars->entropy);
  put(SampleMetric::kPeak, scalars->peak);
  if (scalars->has_region) put(SampleMetric::kRegionShare, scalars->region_share);
  ++total_;
  return absl::OkStatus();
}

WindowSums MonitorWindow::Merged() const {
  WindowSums out(options_.map_length);
  for (const WindowSums& b : buckets_) out.Merge(b);
  return out;
}

void MonitorWindow::ClearRegion() {
  for (WindowSums& b : buckets_) b.scalars[static_cast<int>(SampleMetric::kRegionShare)] = {};
}

void MonitorWindow::Clear() {
  for (WindowSums& b : buckets_) b.Clear();
  current_ = 0;
  started_ = false;
  current_index_ = 0;
  total_ = 0;
}

}  // namespace attnroll::analysis
