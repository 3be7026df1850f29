// Live windows (server/analysis/monitor_window.h): exact and order-independent
// sums, the count and time windows' contents, per-sample scalars by hand,
// histogram quantiles, fixed memory, bad inputs.
#include "server/analysis/monitor_window.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace attnroll::analysis {
namespace {

using Map = std::vector<float>;

Map Random(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  Map m(n);
  for (float& v : m) v = u(rng);
  return m;
}

MonitorWindow Count(int n, int buckets, int64_t per_bucket) {
  WindowOptions o;
  o.map_length = n;
  o.buckets = buckets;
  o.bucket_samples = per_bucket;
  return *MonitorWindow::Create(o);
}

// Mean of the sum-normalised maps, in double (the definition).
std::vector<double> MeanOfNormalised(const std::vector<Map>& maps) {
  std::vector<double> mean(maps[0].size(), 0.0);
  for (const Map& m : maps) {
    double s = 0;
    for (float v : m) s += v;
    for (size_t i = 0; i < m.size(); ++i) mean[i] += m[i] / s;
  }
  for (double& v : mean) v /= static_cast<double>(maps.size());
  return mean;
}

TEST(MonitorWindowTest, MeanMapIsTheMeanOfNormalisedMapsAndOrderIndependent) {
  std::vector<Map> maps;
  for (int i = 0; i < 50; ++i) maps.push_back(Random(12, 100 + i));
  MonitorWindow a = Count(12, 4, 100), b = Count(12, 4, 100);
  for (const Map& m : maps) ASSERT_TRUE(a.Add(m, {}, 0).ok());
  std::vector<int> order(maps.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  for (int i : order) ASSERT_TRUE(b.Add(maps[i], {}, 0).ok());
  const WindowSums sa = a.Merged(), sb = b.Merged();
  EXPECT_EQ(sa.samples, 50);
  for (size_t i = 0; i < sa.map.size(); ++i) EXPECT_TRUE(sa.map[i] == sb.map[i]) << i;
  for (int m = 0; m < kNumSampleMetrics; ++m) {
    EXPECT_TRUE(sa.scalars[m].sum == sb.scalars[m].sum);
    EXPECT_EQ(sa.scalars[m].histogram, sb.scalars[m].histogram);
  }
  const WindowSummary s = Summarise(sa);
  const std::vector<double> want = MeanOfNormalised(maps);
  ASSERT_EQ(s.mean_map.size(), 12u);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(s.mean_map[i], want[i], 1e-7) << i;
}

TEST(MonitorWindowTest, MergeIsAddition) {
  MonitorWindow a = Count(5, 2, 1000), b = Count(5, 2, 1000), all = Count(5, 2, 1000);
  for (int i = 0; i < 20; ++i) {
    const Map m = Random(5, i);
    ASSERT_TRUE((i % 2 ? a : b).Add(m, {}, 0).ok());
    ASSERT_TRUE(all.Add(m, {}, 0).ok());
  }
  WindowSums merged = a.Merged();
  merged.Merge(b.Merged());
  const WindowSums want = all.Merged();
  EXPECT_EQ(merged.samples, want.samples);
  for (size_t i = 0; i < want.map.size(); ++i) EXPECT_TRUE(merged.map[i] == want.map[i]);
  EXPECT_EQ(merged.scalars[0].histogram, want.scalars[0].histogram);
}

// Count window: (buckets - 1) * per_bucket + c samples, c the current bucket's.
TEST(MonitorWindowTest, CountWindowHoldsTheLastBucketsExactly) {
  const int buckets = 4, per = 3;
  MonitorWindow w = Count(6, buckets, per);
  std::vector<Map> maps;
  for (int i = 0; i < 40; ++i) {
    maps.push_back(Random(6, 1000 + i));
    ASSERT_TRUE(w.Add(maps.back(), {}, 0).ok());
    const int total = i + 1;
    const int c = (total - 1) % per + 1;
    const int in_window = std::min(total, (buckets - 1) * per + c);
    const WindowSummary s = Summarise(w.Merged());
    ASSERT_EQ(s.samples, in_window) << "after " << total;
    const std::vector<Map> last(maps.end() - in_window, maps.end());
    const std::vector<double> want = MeanOfNormalised(last);
    for (size_t k = 0; k < want.size(); ++k) ASSERT_NEAR(s.mean_map[k], want[k], 1e-7);
  }
  EXPECT_EQ(w.total_samples(), 40);
}

TEST(MonitorWindowTest, TimeWindowDropsOldBucketsEvenWithoutTraffic) {
  WindowOptions o;
  o.map_length = 2;
  o.buckets = 3;
  o.bucket_seconds = 10;
  MonitorWindow w = *MonitorWindow::Create(o);
  const Map m = {1, 1};
  ASSERT_TRUE(w.Add(m, {}, 1000.0).ok());   // bucket 100
  ASSERT_TRUE(w.Add(m, {}, 1005.0).ok());   // bucket 100
  ASSERT_TRUE(w.Add(m, {}, 1012.0).ok());   // bucket 101
  ASSERT_TRUE(w.Add(m, {}, 1025.0).ok());   // bucket 102: 100..102 in the window
  EXPECT_EQ(w.Merged().samples, 4);
  ASSERT_TRUE(w.Add(m, {}, 1031.0).ok());   // bucket 103: 100 dropped
  EXPECT_EQ(w.Merged().samples, 3);
  w.Rotate(1049.9);  // bucket 104: 101 dropped
  EXPECT_EQ(w.Merged().samples, 2);
  w.Rotate(1500.0);  // long silence: nothing left
  EXPECT_EQ(w.Merged().samples, 0);
  EXPECT_TRUE(Summarise(w.Merged()).mean_map.empty());
}

TEST(MonitorWindowTest, ScalarsByHand) {
  // Uniform: entropy 1 (normalised), peak 1/n.
  absl::StatusOr<SampleScalars> u = ScalarsOf(Map{2, 2, 2, 2}, {});
  ASSERT_TRUE(u.ok());
  EXPECT_DOUBLE_EQ(u->entropy, 1.0);
  EXPECT_DOUBLE_EQ(u->peak, 0.25);
  EXPECT_FALSE(u->has_region);
  // One-hot: entropy 0, peak 1.
  absl::StatusOr<SampleScalars> one = ScalarsOf(Map{0, 5, 0, 0}, std::vector<uint8_t>{1, 0, 0, 1});
  ASSERT_TRUE(one.ok());
  EXPECT_DOUBLE_EQ(one->entropy, 0.0);
  EXPECT_DOUBLE_EQ(one->peak, 1.0);
  EXPECT_TRUE(one->has_region);
  EXPECT_DOUBLE_EQ(one->region_share, 0.0);
  // p = (0.5, 0.25, 0.25): H = 1.5 ln 2, / ln 3; region {0, 2}: 0.75.
  absl::StatusOr<SampleScalars> s = ScalarsOf(Map{2, 1, 1}, std::vector<uint8_t>{1, 0, 7});
  ASSERT_TRUE(s.ok());
  EXPECT_NEAR(s->entropy, 1.5 * std::log(2.0) / std::log(3.0), 1e-15);
  EXPECT_DOUBLE_EQ(s->peak, 0.5);
  EXPECT_DOUBLE_EQ(s->region_share, 0.75);
}

TEST(MonitorWindowTest, HistogramsAndQuantilesByHand) {
  EXPECT_EQ(HistogramBin(0.0), 0);
  EXPECT_EQ(HistogramBin(0.0099), 0);
  EXPECT_EQ(HistogramBin(0.01), 1);
  EXPECT_EQ(HistogramBin(1.0), kHistogramBins - 1);
  // Region shares 0.1, 0.2, ..., 1.0 (maps (v, 1 - v) with region {0}).
  MonitorWindow w = Count(2, 2, 100);
  const std::vector<uint8_t> region = {1, 0};
  for (int k = 1; k <= 10; ++k) {
    const float v = 0.1f * k - 0.0001f;
    ASSERT_TRUE(w.Add(Map{v, 1 - v}, region, 0).ok());
  }
  const WindowSummary s = Summarise(w.Merged());
  const ScalarSummary& r = s.scalars[static_cast<int>(SampleMetric::kRegionShare)];
  EXPECT_EQ(r.count, 10);
  EXPECT_NEAR(r.mean, 0.55 - 0.0001, 1e-7);
  // The 10 values sit in bins 9, 19, ..., 99: p10 is the first bin holding
  // 1 sample (bin 9, centre 0.095), p50 the bin reaching 5 (bin 49), p90 bin 89.
  EXPECT_DOUBLE_EQ(r.p10, 0.095);
  EXPECT_DOUBLE_EQ(r.p50, 0.495);
  EXPECT_DOUBLE_EQ(r.p90, 0.895);
  w.ClearRegion();
  EXPECT_EQ(Summarise(w.Merged()).scalars[static_cast<int>(SampleMetric::kRegionShare)].count, 0);
  EXPECT_EQ(Summarise(w.Merged()).scalars[static_cast<int>(SampleMetric::kPeak)].count, 10);
}

TEST(MonitorWindowTest, MemoryIsFixedWhateverTheTraffic) {
  MonitorWindow w = Count(64, 10, 100);
  const int64_t before = w.bytes();
  const Map m = Random(64, 5);
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(w.Add(m, {}, 0).ok());
  EXPECT_EQ(w.bytes(), before);
  EXPECT_EQ(w.total_samples(), 100000);
  EXPECT_EQ(w.Merged().samples, 9 * 100 + 100);
}

TEST(MonitorWindowTest, BadInputsNameTheField) {
  MonitorWindow w = Count(3, 2, 10);
  auto message = [&](const Map& m, std::vector<uint8_t> region = {}) {
    absl::Status s = w.Add(m, region, 0);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_EQ(message({1, 2}), "map: expected 3 values (the window's map length), got 2");
  EXPECT_EQ(message({1, NAN, 2}), "map[1]: expected a finite value >= 0, got nan");
  EXPECT_EQ(message({1, -1, 2}), "map[1]: expected a finite value >= 0, got -1");
  EXPECT_EQ(message({0, 0, 0}), "map: expected a positive sum, got 0 (no mass)");
  EXPECT_EQ(message({1, 1, 1}, {1, 0}), "region: expected 3 values (the map's length), got 2");
  EXPECT_EQ(w.total_samples(), 0);
  EXPECT_EQ(w.Merged().samples, 0);

  WindowOptions o;
  o.map_length = 0;
  o.bucket_samples = 1;
  EXPECT_EQ(MonitorWindow::Create(o).status().message(), "map_length: expected >= 1, got 0");
  o.map_length = 3;
  o.buckets = 1;
  EXPECT_EQ(MonitorWindow::Create(o).status().message(), "buckets: expected >= 2, got 1");
  o.buckets = 2;
  o.bucket_seconds = 5;
  EXPECT_EQ(MonitorWindow::Create(o).status().message(),
            "window: expected bucket_samples > 0 (a count window) or bucket_seconds > 0 (a time "
            "window), exactly one, got bucket_samples 1 and bucket_seconds 5");
}

}  // namespace
}  // namespace attnroll::analysis
