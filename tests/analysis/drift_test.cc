// Drift of a live window against a baseline (server/analysis/drift.h):
// every number against scipy (tests/analysis/drift_reference.py with
// /usr/bin/python3), the planted shift crossing its threshold at the number of
// samples derived from the window's definition, and identical traffic over a
// long run (the false-alarm count).
#include "server/analysis/drift.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "server/analysis/compare.h"
#include "tests/testutil/run_command.h"

#ifndef ATTNROLL_SOURCE_DIR
#error "ATTNROLL_SOURCE_DIR must name the source tree (set by tests/CMakeLists.txt)"
#endif

namespace attnroll::analysis {
namespace {

using Map = std::vector<float>;
using ::attnroll::testing::RunCommand;
constexpr int kH = 6, kW = 6, kN = kH * kW;

// A model whose maps put 4x the mass per cell on one half of the grid (left:
// columns 0-2, right: 3-5), each cell times (1 + noise * U(-1, 1)).
Map HalfMap(bool left, double noise, std::mt19937* rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  Map m(kN);
  for (int i = 0; i < kN; ++i) {
    const bool in_left = i % kW < kW / 2;
    const double base = (in_left == left) ? 4.0 : 1.0;
    m[i] = static_cast<float>(base * (1.0 + (noise > 0 ? noise * u(*rng) : 0.0)));
  }
  return m;
}

std::vector<uint8_t> LeftRegion() {
  std::vector<uint8_t> r(kN);
  for (int i = 0; i < kN; ++i) r[i] = i % kW < kW / 2;
  return r;
}

MonitorWindow Window(int buckets, int64_t per_bucket) {
  WindowOptions o;
  o.map_length = kN;
  o.buckets = buckets;
  o.bucket_samples = per_bucket;
  return *MonitorWindow::Create(o);
}

struct Pinned {
  std::vector<float> mean;
  std::array<std::array<int64_t, kHistogramBins>, kNumSampleMetrics> histograms;
};

Pinned Pin(const MonitorWindow& w) {
  const WindowSummary s = Summarise(w.Merged());
  Pinned p;
  p.mean = s.mean_map;
  for (int m = 0; m < kNumSampleMetrics; ++m) p.histograms[m] = s.scalars[m].histogram;
  return p;
}

Drift DriftOf(const Pinned& p, const MonitorWindow& w, bool with_histograms = true) {
  BaselineView v;
  v.mean_map = p.mean;
  if (with_histograms) v.histograms = &p.histograms;
  DriftSpec spec;
  spec.grid_h = kH;
  spec.grid_w = kW;
  spec.region = LeftRegion();
  absl::StatusOr<Drift> d = ComputeDrift(v, Summarise(w.Merged()), spec);
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

double Value(const Drift& d, DriftMetric m) {
  EXPECT_TRUE(d[m].value.has_value()) << DriftMetricName(m) << ": " << d[m].note;
  return d[m].value.value_or(NAN);
}

// ---- against scipy --------------------------------------------------------------

std::string Floats(const std::vector<float>& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.9g", v[i]);
    s << (i ? " " : "") << buf;
  }
  return s.str();
}

std::string Counts(const std::array<int64_t, kHistogramBins>& h) {
  std::ostringstream s;
  for (int i = 0; i < kHistogramBins; ++i) s << (i ? " " : "") << h[i];
  return s.str();
}

TEST(DriftTest, EveryNumberMatchesScipy) {
  int status = 0;
  RunCommand("/usr/bin/python3 -c 'import scipy' 2>&1", &status);
  ASSERT_EQ(status, 0) << "/usr/bin/python3 cannot import scipy: install python3-scipy";
  struct Case {
    Pinned base;
    WindowSummary live;
  };
  std::vector<Case> cases;
  std::mt19937 rng(11);
  for (int c = 0; c < 6; ++c) {
    MonitorWindow b = Window(4, 50), l = Window(4, 50);
    const std::vector<uint8_t> region = LeftRegion();
    for (int i = 0; i < 120; ++i) ASSERT_TRUE(b.Add(HalfMap(true, 0.5, &rng), region, 0).ok());
    for (int i = 0; i < 90 + 10 * c; ++i) {
      const bool left = (i % 6) >= c;  // more and more of the right model
      ASSERT_TRUE(l.Add(HalfMap(left, 0.3 + 0.1 * c, &rng), region, 0).ok());
    }
    cases.push_back({Pin(b), Summarise(l.Merged())});
  }
  char path[] = "/tmp/attnroll_drift_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << cases.size() << "\n";
    for (const Case& c : cases) {
      f << kN << " " << kH << " " << kW << "\n" << Floats(c.base.mean) << "\n" << Floats(c.live.mean_map) << "\n";
      const std::vector<uint8_t> r = LeftRegion();
      for (int i = 0; i < kN; ++i) f << (i ? " " : "") << int(r[i]);
      f << "\n";
      for (int m = 0; m < kNumSampleMetrics; ++m) f << Counts(c.base.histograms[m]) << "\n";
      for (int m = 0; m < kNumSampleMetrics; ++m) f << Counts(c.live.scalars[m].histogram) << "\n";
    }
  }
  const std::string script = std::string(ATTNROLL_SOURCE_DIR) + "/tests/analysis/drift_reference.py";
  const std::string out = RunCommand("/usr/bin/python3 " + script + " " + path + " 2>&1", &status);
  std::remove(path);
  ASSERT_EQ(status, 0) << out;
  std::istringstream in(out);
  std::vector<std::map<std::string, double>> want;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("case ", 0) == 0) {
      want.emplace_back();
      continue;
    }
    std::istringstream ls(line);
    std::string name;
    double v;
    ls >> name >> v;
    ASSERT_FALSE(want.empty()) << out;
    want.back()[name] = v;
  }
  ASSERT_EQ(want.size(), cases.size()) << out;
  for (size_t c = 0; c < cases.size(); ++c) {
    BaselineView v;
    v.mean_map = cases[c].base.mean;
    v.histograms = &cases[c].base.histograms;
    DriftSpec spec;
    spec.grid_h = kH;
    spec.grid_w = kW;
    spec.region = LeftRegion();
    absl::StatusOr<Drift> d = ComputeDrift(v, cases[c].live, spec);
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_EQ(want[c].size(), 10u) << out;
    for (const auto& [name, value] : want[c]) {
      bool found = false;
      for (int m = 0; m < kNumDriftMetrics; ++m) {
        if (name != DriftMetricName(static_cast<DriftMetric>(m))) continue;
        found = true;
        ASSERT_TRUE(d->values[m].value.has_value()) << name;
        const double tol = name == "emd" ? 1e-7 : 1e-10;
        EXPECT_NEAR(*d->values[m].value, value, tol) << "case " << c << " " << name;
      }
      EXPECT_TRUE(found) << name;
    }
  }
}

// W1 of two histograms by hand: all mass one bin apart is 1 / bins.
TEST(DriftTest, HistogramW1ByHand) {
  std::array<int64_t, kHistogramBins> a{}, b{};
  a[10] = 3;
  b[11] = 7;
  EXPECT_NEAR(*HistogramW1(a, b), 0.01, 1e-15);
  b[11] = 0;
  b[60] = 1;
  EXPECT_NEAR(*HistogramW1(a, b), 0.5, 1e-15);
  EXPECT_DOUBLE_EQ(*HistogramW1(a, a), 0.0);
  EXPECT_FALSE(HistogramW1(a, {}).has_value());
}

// ---- the planted shift ----------------------------------------------------------

// Noise-free maps: the live mean is exactly (1 - f) L + f R with f the
// fraction of right-model samples in the window, so the EMD is f * EMD(L, R),
// the centre-of-mass shift f * |com(R) - com(L)| and the region-share delta
// f * (share(R) - share(L)). With B buckets of s samples and a full window of
// left samples (B * s), after N right samples the window holds
// (B - 1) s + c(N) samples, c(N) = ((B s + N - 1) mod s) + 1, N of them
// right (while N <= (B - 1) s + c(N)): f(N) = N / ((B - 1) s + c(N)).
// The EMD crosses a threshold t at the first N with f(N) EMD(L, R) > t.
TEST(DriftTest, PlantedShiftCrossesTheThresholdAtTheDerivedSample) {
  const int B = 10, s = 100;
  std::mt19937 rng(1);
  const Map L = HalfMap(true, 0, &rng), R = HalfMap(false, 0, &rng);
  CompareSpec cs;
  cs.grid_h = kH;
  cs.grid_w = kW;
  cs.region = LeftRegion();
  const Comparison full = *CompareMaps(L, R, cs);
  const double emd_full = *full.emd;                            // 3 * 0.6 = 1.8 cells
  const double share_drop = *full.region_share_a - *full.region_share_b;  // 0.8 - 0.2
  EXPECT_NEAR(emd_full, 1.8, 1e-6);
  EXPECT_NEAR(share_drop, 0.6, 1e-7);
  MonitorWindow w = Window(B, s);
  for (int i = 0; i < B * s; ++i) ASSERT_TRUE(w.Add(L, LeftRegion(), 0).ok());
  const Pinned base = Pin(w);
  EXPECT_NEAR(Value(DriftOf(base, w), DriftMetric::kEmd), 0.0, 1e-9);

  const double t = 0.5;  // cells, the alert rule's threshold
  int crossed = -1, predicted = -1;
  for (int N = 1; N <= 400; ++N) {
    ASSERT_TRUE(w.Add(R, LeftRegion(), 0).ok());
    const int c = (B * s + N - 1) % s + 1;
    const double f = static_cast<double>(N) / ((B - 1) * s + c);
    const Drift d = DriftOf(base, w);
    ASSERT_NEAR(Value(d, DriftMetric::kEmd), f * emd_full, 2e-6) << N;
    ASSERT_NEAR(Value(d, DriftMetric::kComShift), f * 3.0 * 0.6, 2e-6) << N;
    ASSERT_NEAR(Value(d, DriftMetric::kRegionShareDelta), -f * share_drop, 1e-6) << N;
    if (predicted < 0 && f * emd_full > t) predicted = N;
    if (crossed < 0 && Value(d, DriftMetric::kEmd) > t) crossed = N;
  }
  // f * 1.8 > 0.5 needs f > 0.27778: N = 269 gives 269 / 969 = 0.27761,
  // N = 270 gives 270 / 970 = 0.27835 (emd 0.50103).
  EXPECT_EQ(predicted, 270);
  EXPECT_EQ(crossed, predicted);
}

// The same with noisy maps (each cell times 1 +- 50%): the crossing is within
// a few samples of the noise-free prediction.
TEST(DriftTest, NoisyPlantedShiftCrossesNearThePrediction) {
  const int B = 10, s = 100;
  std::mt19937 rng(2);
  MonitorWindow w = Window(B, s);
  for (int i = 0; i < B * s; ++i) ASSERT_TRUE(w.Add(HalfMap(true, 0.5, &rng), LeftRegion(), 0).ok());
  const Pinned base = Pin(w);
  int emd_at = -1, drop_at = -1, js_at = -1;
  for (int N = 1; N <= 600 && (emd_at < 0 || drop_at < 0 || js_at < 0); ++N) {
    ASSERT_TRUE(w.Add(HalfMap(false, 0.5, &rng), LeftRegion(), 0).ok());
    const Drift d = DriftOf(base, w);
    if (emd_at < 0 && Value(d, DriftMetric::kEmd) > 0.5) emd_at = N;
    if (drop_at < 0 && Value(d, DriftMetric::kRegionShareDelta) < -0.1) drop_at = N;
    if (js_at < 0 && Value(d, DriftMetric::kJsDivergence) > 0.01) js_at = N;
  }
  std::printf("noisy planted shift: emd > 0.5 after %d samples, region share drop > 0.1 after %d, "
              "js > 0.01 after %d (window 1000)\n", emd_at, drop_at, js_at);
  // Noise-free: emd > 0.5 at N = 270; a drop > 0.1 needs f > 1/6: N = 161
  // (161 / 961 = 0.1675; 160 / 960 is exactly 1/6).
  EXPECT_NEAR(emd_at, 270, 15);
  EXPECT_NEAR(drop_at, 161, 15);
  EXPECT_GT(js_at, 0);
  EXPECT_LT(js_at, 270);
}

// Identical traffic: the baseline is a full window of the left model, then
// 100,000 more samples of the same model, checked every 50 samples against
// the rule thresholds. None alarms; the largest values seen are printed.
TEST(DriftTest, IdenticalTrafficNeverAlarms) {
  const int B = 10, s = 100;
  std::mt19937 rng(3);
  MonitorWindow w = Window(B, s);
  for (int i = 0; i < B * s; ++i) ASSERT_TRUE(w.Add(HalfMap(true, 0.5, &rng), LeftRegion(), 0).ok());
  const Pinned base = Pin(w);
  int checks = 0, alarms = 0;
  double max_js = 0, max_emd = 0, max_com = 0, max_drop = 0, max_w1 = 0;
  for (int i = 1; i <= 100000; ++i) {
    ASSERT_TRUE(w.Add(HalfMap(true, 0.5, &rng), LeftRegion(), 0).ok());
    if (i % 50 != 0) continue;
    const Drift d = DriftOf(base, w);
    ++checks;
    const double js = Value(d, DriftMetric::kJsDivergence), emd = Value(d, DriftMetric::kEmd);
    const double com = Value(d, DriftMetric::kComShift), drop = -Value(d, DriftMetric::kRegionShareDelta);
    const double w1 = Value(d, DriftMetric::kRegionShareW1);
    max_js = std::max(max_js, js);
    max_emd = std::max(max_emd, emd);
    max_com = std::max(max_com, com);
    max_drop = std::max(max_drop, drop);
    max_w1 = std::max(max_w1, w1);
    alarms += js > 0.01 || emd > 0.5 || com > 0.5 || drop > 0.1 || w1 > 0.05;
  }
  std::printf("identical traffic: %d checks over 100000 samples, %d alarms; max js %.2e, emd %.4f, "
              "com_shift %.4f, region share drop %.4f, region_share_w1 %.4f\n",
              checks, alarms, max_js, max_emd, max_com, max_drop, max_w1);
  EXPECT_EQ(checks, 2000);
  EXPECT_EQ(alarms, 0);
  // The noise is far below every threshold (a margin of >= 5x).
  EXPECT_LT(max_emd, 0.1);
  EXPECT_LT(max_js, 0.002);
}

TEST(DriftTest, UndefinedNumbersSayWhy) {
  MonitorWindow w = Window(2, 10);
  Pinned p;
  p.mean.assign(kN, 1.0f / kN);
  BaselineView v;
  v.mean_map = p.mean;
  absl::StatusOr<Drift> empty = ComputeDrift(v, Summarise(w.Merged()), {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->values[0].note, "no sample in the window yet");
  std::mt19937 rng(1);
  ASSERT_TRUE(w.Add(HalfMap(true, 0.1, &rng), {}, 0).ok());
  absl::StatusOr<Drift> flat = ComputeDrift(v, Summarise(w.Merged()), {});  // no grid, region, histograms
  ASSERT_TRUE(flat.ok());
  EXPECT_TRUE((*flat)[DriftMetric::kJsDivergence].value.has_value());
  EXPECT_FALSE((*flat)[DriftMetric::kEmd].value.has_value());
  EXPECT_EQ((*flat)[DriftMetric::kRegionShareDelta].note, "the baseline has no region");
  EXPECT_EQ((*flat)[DriftMetric::kEntropyW1].note,
            "the baseline has no per-pass distributions (made from an audit report)");
  Pinned short_base;
  short_base.mean.assign(5, 0.2f);
  v.mean_map = short_base.mean;
  absl::StatusOr<Drift> bad = ComputeDrift(v, Summarise(w.Merged()), {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "baseline: its maps have 5 values, the live maps 36");
}

}  // namespace
}  // namespace attnroll::analysis
