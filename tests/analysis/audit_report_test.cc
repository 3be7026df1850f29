// Audit aggregation (server/analysis/audit_report.h): identical models report
// zero drift, a planted shift of mass (left half -> right half of an 8x8 grid)
// is flagged and shows in the mean shift map and the region shares, the report
// is bit-identical whatever the order items are added in, groups, quantiles and
// worst-items lists by hand, bounded map memory, bad inputs.
#include "server/analysis/audit_report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace attnroll::analysis {
namespace {

using Map = std::vector<float>;
constexpr int kH = 8, kW = 8, kN = kH * kW;

// ---- data -----------------------------------------------------------------------

// A Gaussian blob at (r0, c0) plus noise, on the kH x kW grid (not normalised:
// the aggregator normalises each map itself).
Map Blob(double r0, double c0, double sigma, std::mt19937& rng) {
  std::uniform_real_distribution<double> noise(0.0, 0.05);
  Map m(kN);
  for (int r = 0; r < kH; ++r)
    for (int c = 0; c < kW; ++c) {
      const double d2 = (r - r0) * (r - r0) + (c - c0) * (c - c0);
      m[r * kW + c] = static_cast<float>(std::exp(-d2 / (2 * sigma * sigma)) + noise(rng));
    }
  return m;
}

// Mass on the left half (cols 0..3: a blob there, >= 0.2 per cell) and a little
// noise on the right half (<= 0.01 per cell).
Map LeftHeavy(std::mt19937& rng) {
  std::uniform_real_distribution<double> row(1.0, 6.0), col(0.5, 2.5), noise(0.0, 0.01);
  const double r0 = row(rng), c0 = col(rng);
  Map m(kN);
  for (int r = 0; r < kH; ++r)
    for (int c = 0; c < kW; ++c) {
      const double d2 = (r - r0) * (r - r0) + (c - c0) * (c - c0);
      m[r * kW + c] = c < kW / 2 ? static_cast<float>(0.2 + std::exp(-d2 / 4.0))
                                 : static_cast<float>(noise(rng));
    }
  return m;
}

// The map mirrored left <-> right: the mass of the left half moves to the right.
Map Mirror(const Map& m) {
  Map out(kN);
  for (int r = 0; r < kH; ++r)
    for (int c = 0; c < kW; ++c) out[r * kW + c] = m[r * kW + (kW - 1 - c)];
  return out;
}

std::vector<uint8_t> LeftHalf() {
  std::vector<uint8_t> region(kN);
  for (int i = 0; i < kN; ++i) region[i] = (i % kW) < kW / 2;
  return region;
}

CompareSpec GridSpec(bool region) {
  CompareSpec spec;
  spec.grid_h = kH;
  spec.grid_w = kW;
  spec.ssim_window = 7;
  if (region) spec.region = LeftHalf();
  return spec;
}

AuditItem MakeItem(std::string id, std::string group, Map a, Map b, const CompareSpec& spec) {
  AuditItem item;
  item.id = std::move(id);
  item.group = std::move(group);
  absl::StatusOr<Comparison> c = CompareMaps(a, b, spec);
  EXPECT_TRUE(c.ok()) << c.status();
  if (c.ok()) item.comparison = *std::move(c);
  item.baseline = std::move(a);
  item.candidate = std::move(b);
  return item;
}

AuditOptions GridOptions() {
  AuditOptions o;
  o.map_length = kN;
  o.grid_h = kH;
  o.grid_w = kW;
  return o;
}

AuditAggregator MustCreate(const AuditOptions& o) {
  absl::StatusOr<AuditAggregator> a = AuditAggregator::Create(o);
  EXPECT_TRUE(a.ok()) << a.status();
  return *std::move(a);
}

std::vector<std::string> MustAdd(AuditAggregator& agg, const AuditItem& item) {
  absl::StatusOr<std::vector<std::string>> f = agg.Add(item);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : std::vector<std::string>{};
}

// A comparison with only the scalars set (for hand-made distributions).
AuditItem Scalars(std::string id, std::string group = "") {
  AuditItem item;
  item.id = std::move(id);
  item.group = std::move(group);
  item.baseline.assign(4, 1.0f);
  item.candidate.assign(4, 1.0f);
  item.comparison.cosine = 1;
  item.comparison.top_k_iou = 1;
  return item;
}

AuditOptions FlatOptions(int n = 4) {
  AuditOptions o;
  o.map_length = n;
  return o;
}

// Every field of a report, doubles and floats in hexadecimal: equal strings
// mean bit-identical reports.
std::string Dump(const AuditAggregate& g) {
  std::string s = absl::StrCat("group '", g.group, "' items ", g.items, " drifted ", g.drifted,
                               " truncated ", g.drifted_ids_truncated, "\n");
  for (const MetricSummary& m : g.metrics) {
    absl::StrAppendFormat(
        &s, "%s worse %d count %d undefined %d mean %a median %a p10 %a p90 %a min %a max %a\n",
        m.metric, static_cast<int>(m.worse), m.count, m.undefined, m.mean, m.median, m.p10, m.p90,
        m.min, m.max);
    for (const WorstItem& w : m.worst) absl::StrAppendFormat(&s, "  worst %s %a\n", w.id, w.value);
    for (const std::string& id : m.undefined_ids) absl::StrAppend(&s, "  undefined ", id, "\n");
  }
  const RegionSummary& r = g.region;
  absl::StrAppendFormat(&s, "region %d %a %a %a %d %d %d %a\n", r.items, r.mean_share_a,
                        r.mean_share_b, r.mean_delta, r.dropped, r.increased, r.unchanged,
                        r.dropped_fraction);
  for (const auto& [name, count] : g.flag_counts)
    absl::StrAppend(&s, "flag ", name, " ", count, "\n");
  for (const std::string& id : g.drifted_ids) absl::StrAppend(&s, "drifted ", id, "\n");
  for (const auto* map : {&g.mean_baseline, &g.mean_candidate, &g.mean_shift}) {
    absl::StrAppend(&s, "map");
    for (float v : *map) absl::StrAppendFormat(&s, " %a", static_cast<double>(v));
    absl::StrAppend(&s, "\n");
  }
  return s;
}

std::string Dump(const AuditReport& r) {
  std::string s =
      absl::StrCat("n ", r.map_length, " grid ", r.grid_h, "x", r.grid_w, "\n", Dump(r.overall));
  for (const AuditAggregate& g : r.groups) s += Dump(g);
  return s;
}

DriftThresholds StrictThresholds() {
  DriftThresholds t;
  t.min_spearman = 0.999;
  t.min_kendall_tau_b = 0.999;
  t.min_pearson = 0.999;
  t.min_cosine = 0.999;
  t.min_top_k_iou = 1.0;
  t.min_ssim = 0.999;
  t.max_l1 = 0;
  t.max_l2 = 0;
  t.max_js_divergence = 0;
  t.max_emd = 0;
  t.max_com_shift = 0;
  t.max_region_share_drop = 0;
  return t;
}

// ---- identical models -------------------------------------------------------------

TEST(AuditReportTest, IdenticalModelsReportZeroDrift) {
  AuditOptions o = GridOptions();
  o.thresholds = StrictThresholds();  // every threshold at its no-change value
  AuditAggregator agg = MustCreate(o);
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> pos(0.0, 7.0);
  const CompareSpec spec = GridSpec(/*region=*/true);
  for (int i = 0; i < 60; ++i) {
    Map a = Blob(pos(rng), pos(rng), 1.5, rng);
    const std::vector<std::string> flags =
        MustAdd(agg, MakeItem(absl::StrCat("item", i), i % 2 ? "odd" : "even", a, a, spec));
    EXPECT_TRUE(flags.empty()) << "item " << i << " flagged " << flags.front();
  }
  const AuditReport r = agg.Finish();
  EXPECT_EQ(r.overall.items, 60);
  EXPECT_EQ(r.overall.drifted, 0);
  EXPECT_TRUE(r.overall.drifted_ids.empty());
  EXPECT_EQ(r.overall.flag_counts.size(), 12u);  // every set threshold, each with 0 items
  for (const auto& [name, count] : r.overall.flag_counts) EXPECT_EQ(count, 0) << name;
  for (const MetricSummary& m : r.overall.metrics) {
    EXPECT_EQ(m.count, 60) << m.metric;
    EXPECT_EQ(m.undefined, 0) << m.metric;
  }
  for (AuditMetric m :
       {AuditMetric::kL1, AuditMetric::kL2, AuditMetric::kJsDivergence, AuditMetric::kEmd,
        AuditMetric::kComShift, AuditMetric::kRegionShareDelta}) {
    const MetricSummary& s = r.overall.metric(m);
    EXPECT_EQ(s.min, 0) << s.metric;
    EXPECT_EQ(s.max, 0) << s.metric;
    EXPECT_EQ(s.mean, 0) << s.metric;
  }
  for (AuditMetric m : {AuditMetric::kSpearman, AuditMetric::kKendallTauB, AuditMetric::kPearson,
                        AuditMetric::kCosine, AuditMetric::kTopKIou, AuditMetric::kSsim}) {
    const MetricSummary& s = r.overall.metric(m);
    EXPECT_NEAR(s.min, 1.0, 1e-12) << s.metric;
    EXPECT_NEAR(s.max, 1.0, 1e-12) << s.metric;
  }
  EXPECT_EQ(r.overall.region.items, 60);
  EXPECT_EQ(r.overall.region.unchanged, 60);
  EXPECT_EQ(r.overall.region.dropped, 0);
  EXPECT_EQ(r.overall.region.dropped_fraction, 0);
  ASSERT_EQ(r.overall.mean_shift.size(), static_cast<size_t>(kN));
  EXPECT_EQ(r.overall.mean_baseline, r.overall.mean_candidate);  // exact sums: bit-equal
  double total = 0;
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(r.overall.mean_shift[i], 0.0f) << i;
    EXPECT_FALSE(std::signbit(r.overall.mean_shift[i])) << i;
    total += r.overall.mean_baseline[i];
  }
  EXPECT_NEAR(total, 1.0, 1e-6);  // a mean of distributions is a distribution
  ASSERT_EQ(r.groups.size(), 2u);
  for (const AuditAggregate& g : r.groups) {
    EXPECT_EQ(g.items, 30);
    EXPECT_EQ(g.drifted, 0);
    EXPECT_EQ(g.mean_baseline, g.mean_candidate);
  }
}

// ---- planted shift ----------------------------------------------------------------

TEST(AuditReportTest, PlantedShiftFromLeftToRightIsDetected) {
  AuditOptions o = GridOptions();
  o.thresholds.max_emd = 1.0;
  o.thresholds.max_com_shift = 1.0;
  o.thresholds.max_region_share_drop = 0.2;
  o.thresholds.min_spearman = -1.0;  // set but never crossed
  AuditAggregator agg = MustCreate(o);
  std::mt19937 rng(7);
  const CompareSpec spec = GridSpec(/*region=*/true);
  const int items = 80;
  double delta_sum = 0;
  for (int i = 0; i < items; ++i) {
    const Map a = LeftHeavy(rng);
    AuditItem item = MakeItem(absl::StrCat("img", 1000 + i), "", a, Mirror(a), spec);
    delta_sum += *item.comparison.region_share_b - *item.comparison.region_share_a;
    const std::vector<std::string> flags = MustAdd(agg, item);
    EXPECT_EQ(flags,
              (std::vector<std::string>{"max_emd", "max_com_shift", "max_region_share_drop"}))
        << "item " << i;
  }
  const AuditReport r = agg.Finish();
  const AuditAggregate& g = r.overall;
  EXPECT_EQ(g.drifted, items);
  EXPECT_EQ(g.flag_counts.at("max_emd"), items);
  EXPECT_EQ(g.flag_counts.at("max_com_shift"), items);
  EXPECT_EQ(g.flag_counts.at("max_region_share_drop"), items);
  EXPECT_EQ(g.flag_counts.at("min_spearman"), 0);
  EXPECT_EQ(g.drifted_ids.size(), static_cast<size_t>(items));
  EXPECT_TRUE(std::is_sorted(g.drifted_ids.begin(), g.drifted_ids.end()));
  EXPECT_FALSE(g.drifted_ids_truncated);
  // Every left cell lost mass on average, every right cell gained it.
  ASSERT_EQ(g.mean_shift.size(), static_cast<size_t>(kN));
  double left_shift = 0;
  for (int i = 0; i < kN; ++i) {
    if (i % kW < kW / 2) {
      EXPECT_LT(g.mean_shift[i], 0.0f) << "cell " << i;
      left_shift += g.mean_shift[i];
    } else {
      EXPECT_GT(g.mean_shift[i], 0.0f) << "cell " << i;
    }
    // Mirror: the candidate's mean is the baseline's mean mirrored.
    const int mirrored = (i / kW) * kW + (kW - 1 - i % kW);
    EXPECT_NEAR(g.mean_candidate[i], g.mean_baseline[mirrored], 1e-7);
    EXPECT_NEAR(g.mean_shift[i], g.mean_candidate[i] - g.mean_baseline[i], 1e-7);
  }
  // Reliance left the left half: shares, their drop, and the identity
  // sum over the region of mean_shift == mean region_share_delta.
  EXPECT_EQ(g.region.items, items);
  EXPECT_EQ(g.region.dropped, items);
  EXPECT_EQ(g.region.dropped_fraction, 1.0);
  EXPECT_GT(g.region.mean_share_a, 0.9);
  EXPECT_LT(g.region.mean_share_b, 0.1);
  EXPECT_NEAR(g.region.mean_delta, g.region.mean_share_b - g.region.mean_share_a, 1e-12);
  EXPECT_NEAR(g.region.mean_delta, delta_sum / items, 1e-12);
  EXPECT_NEAR(left_shift, g.region.mean_delta, 1e-6);
  EXPECT_LT(g.metric(AuditMetric::kRegionShareDelta).max, -0.8);
  // The worst items of emd are the items with the largest emd, descending.
  const MetricSummary& emd = g.metric(AuditMetric::kEmd);
  ASSERT_EQ(emd.worst.size(), 10u);
  EXPECT_EQ(emd.worst.front().value, emd.max);
  for (size_t i = 1; i < emd.worst.size(); ++i)
    EXPECT_GE(emd.worst[i - 1].value, emd.worst[i].value);
  EXPECT_GT(emd.min, 1.0);
}

// ---- order independence -------------------------------------------------------------

// 200 items of every kind (groups, no group, constant maps with undefined
// correlations, shifted and unshifted, ties of values) in 5 random orders.
TEST(AuditReportTest, ReportIsBitIdenticalWhateverTheOrder) {
  std::mt19937 rng(2024);
  std::uniform_real_distribution<double> pos(0.0, 7.0), u(0.0, 1.0);
  const CompareSpec spec = GridSpec(/*region=*/true);
  const char* groups[] = {"", "cat", "dog", "bird"};
  std::vector<AuditItem> items;
  for (int i = 0; i < 200; ++i) {
    Map a, b;
    if (i % 17 == 0) {
      a.assign(kN, 0.25f);  // constant: spearman/kendall/pearson undefined
      b = Blob(pos(rng), pos(rng), 1.0, rng);
    } else if (i % 3 == 0) {
      a = LeftHeavy(rng);
      b = Mirror(a);
    } else {
      a = Blob(pos(rng), pos(rng), 1.5, rng);
      b = u(rng) < 0.2 ? a : Blob(pos(rng), pos(rng), 1.5, rng);  // some identical: ties
    }
    items.push_back(MakeItem(absl::StrFormat("x%03d", (i * 37) % 200), groups[i % 4], a, b, spec));
  }
  AuditOptions o = GridOptions();
  o.thresholds.max_emd = 1.5;
  o.thresholds.min_spearman = 0.5;
  o.thresholds.max_region_share_drop = 0.3;
  o.worst_items = 7;
  o.max_drifted_ids = 25;

  std::string first;
  std::vector<AuditItem*> order;
  for (AuditItem& it : items) order.push_back(&it);
  std::mt19937 shuffle_rng(99);
  for (int run = 0; run < 5; ++run) {
    if (run > 0) std::shuffle(order.begin(), order.end(), shuffle_rng);
    AuditAggregator agg = MustCreate(o);
    for (AuditItem* it : order) MustAdd(agg, *it);
    const std::string dump = Dump(agg.Finish());
    if (run == 0) {
      first = dump;
      EXPECT_NE(dump.find("group 'bird' items 50"), std::string::npos);
    } else {
      EXPECT_EQ(dump, first) << "run " << run;
    }
  }
  // The dump covers something: undefined correlations and a truncated list.
  AuditAggregator agg = MustCreate(o);
  for (AuditItem& it : items) MustAdd(agg, it);
  const AuditReport r = agg.Finish();
  EXPECT_EQ(r.overall.metric(AuditMetric::kSpearman).undefined, 12);  // i = 0, 17, ..., 187
  EXPECT_EQ(r.overall.metric(AuditMetric::kSpearman).undefined_ids.size(), 7u);
  EXPECT_TRUE(r.overall.drifted_ids_truncated);
  EXPECT_EQ(r.overall.drifted_ids.size(), 25u);
  EXPECT_GT(r.overall.drifted, 25);
}

// 200 items of every kind (undefined correlations, ties, groups, region
// shares) under thresholds that flag some of them.
std::vector<AuditItem> MixedItems() {
  std::mt19937 rng(77);
  std::uniform_real_distribution<double> pos(0.0, 7.0), u(0.0, 1.0);
  const CompareSpec spec = GridSpec(/*region=*/true);
  const char* groups[] = {"", "cat", "dog", "bird"};
  std::vector<AuditItem> items;
  for (int i = 0; i < 200; ++i) {
    Map a, b;
    if (i % 17 == 0) {
      a.assign(kN, 0.25f);
      b = Blob(pos(rng), pos(rng), 1.0, rng);
    } else if (i % 3 == 0) {
      a = LeftHeavy(rng);
      b = Mirror(a);
    } else {
      a = Blob(pos(rng), pos(rng), 1.5, rng);
      b = u(rng) < 0.2 ? a : Blob(pos(rng), pos(rng), 1.5, rng);
    }
    items.push_back(MakeItem(absl::StrFormat("x%03d", (i * 37) % 200), groups[i % 4], a, b, spec));
  }
  return items;
}

AuditOptions MixedOptions() {
  AuditOptions o = GridOptions();
  o.thresholds.max_emd = 1.5;
  o.thresholds.min_spearman = 0.5;
  o.thresholds.max_region_share_drop = 0.3;
  o.worst_items = 7;
  o.max_drifted_ids = 25;
  return o;
}

// Shards of one dataset, each aggregated alone, merged through their exported
// states: the report equals (bit for bit) one aggregator fed every item, for 1
// to 7 shards, uneven shards and a shard without items included.
TEST(AuditReportTest, MergedShardStatesGiveTheReportOfOneAudit) {
  const std::vector<AuditItem> items = MixedItems();
  const AuditOptions o = MixedOptions();
  AuditAggregator whole = MustCreate(o);
  for (const AuditItem& it : items) MustAdd(whole, it);
  const std::string expected = Dump(whole.Finish());
  for (int shards : {1, 2, 3, 7}) {
    std::vector<AuditAggregator> parts;
    for (int k = 0; k < shards; ++k) parts.push_back(MustCreate(o));
    for (size_t i = 0; i < items.size(); ++i) {
      // Uneven: shard 0 takes every item with i % 5 == 0, the rest round robin.
      const int k = shards == 1 || i % 5 == 0 ? 0 : 1 + static_cast<int>(i % (shards - 1));
      MustAdd(parts[k], items[i]);
    }
    AuditAggregator merged = MustCreate(o);
    // Merged in reverse, one extra empty shard among them.
    ASSERT_TRUE(merged.MergeState(MustCreate(o).ExportState()).ok());
    for (int k = shards - 1; k >= 0; --k) {
      const absl::Status s = merged.MergeState(parts[k].ExportState());
      ASSERT_TRUE(s.ok()) << s;
    }
    EXPECT_EQ(merged.items(), 200);
    EXPECT_EQ(Dump(merged.Finish()), expected) << shards << " shards";
  }
  // Export then merge into an empty aggregator is the identity.
  AuditAggregator copy = MustCreate(o);
  ASSERT_TRUE(copy.MergeState(whole.ExportState()).ok());
  EXPECT_EQ(Dump(copy.Finish()), expected);
  // Items arrive sorted by id; sums overall first, then groups by label.
  const AuditState state = whole.ExportState();
  ASSERT_EQ(state.items.size(), 200u);
  EXPECT_EQ(state.items.front().id, "x000");
  EXPECT_EQ(state.items.back().id, "x199");
  ASSERT_EQ(state.sums.size(), 4u);
  EXPECT_EQ(state.sums[0].group, "");
  EXPECT_EQ(state.sums[1].group, "bird");
  EXPECT_EQ(state.sums[3].group, "dog");
}

// A bad state is refused whole, with the field and the value, and changes nothing.
TEST(AuditReportTest, MergeRefusesBadStatesAndChangesNothing) {
  const std::vector<AuditItem> items = MixedItems();
  const AuditOptions o = MixedOptions();
  AuditAggregator a = MustCreate(o), b = MustCreate(o);
  for (size_t i = 0; i < items.size(); ++i) MustAdd(i < 150 ? a : b, items[i]);
  const std::string before = Dump(a.Finish());
  const AuditState good = b.ExportState();
  struct Case {
    std::string name;
    std::function<void(AuditState&)> spoil;
    absl::StatusCode code;
    std::string message;
  };
  const std::string first_id = good.items[0].id;
  const std::vector<Case> cases = {
      {"id already added",
       [&](AuditState& s) { s.items[3].id = items[0].id; },
       absl::StatusCode::kInvalidArgument,
       absl::StrCat("state.items[3]: item id \"", items[0].id,
                    "\" already added (ids must be unique within an audit: is the item in two "
                    "shards?)")},
      {"id twice in the state",
       [&](AuditState& s) { s.items[1].id = s.items[0].id; },
       absl::StatusCode::kInvalidArgument,
       absl::StrCat("state.items[1]: item id \"", first_id,
                    "\" already added (ids must be unique within an audit: is the item in two "
                    "shards?)")},
      {"empty id", [](AuditState& s) { s.items[2].id = ""; }, absl::StatusCode::kInvalidArgument,
       "state.items[2].id: expected a non-empty id, got \"\""},
      {"infinite value",
       [](AuditState& s) { s.items[0].value[5] = INFINITY; },
       absl::StatusCode::kInvalidArgument,
       absl::StrCat("state.items[0] (\"", first_id,
                    "\").values[5] (l1): is inf, expected a finite value or NaN (undefined)")},
      {"one region share",
       [](AuditState& s) { s.items[0].value[11] = NAN; },
       absl::StatusCode::kInvalidArgument,
       absl::StrCat("state.items[0] (\"", first_id,
                    "\"): region_share_a and region_share_b: expected both defined or both NaN, "
                    "got only region_share_b")},
      {"delta not b - a",
       [](AuditState& s) {
         s.items[0].value[11] = 0.25;
         s.items[0].value[12] = 0.5;
         s.items[0].value[13] = 0.2;
       },
       absl::StatusCode::kInvalidArgument,
       absl::StrCat("state.items[0] (\"", first_id,
                    "\").values[13] (region_share_delta): is 0.2, expected region_share_b - "
                    "region_share_a = 0.25")},
      {"no overall sums", [](AuditState& s) { s.sums.erase(s.sums.begin()); },
       absl::StatusCode::kInvalidArgument,
       "state.sums: no entry for the whole audit (group \"\")"},
      {"a group's sums missing", [](AuditState& s) { s.sums.pop_back(); },
       absl::StatusCode::kInvalidArgument,
       "state.sums: no entry for group \"dog\" (13 items)"},
      {"sums of a group without items",
       [](AuditState& s) { s.sums.back().group = "eel"; },
       absl::StatusCode::kInvalidArgument,
       "state.sums[3] (group \"eel\"): expected sums only for the whole audit (\"\") and the "
       "groups of the state's items, got a group no item of the state is in"},
      {"sums twice", [](AuditState& s) { s.sums[1].group = ""; },
       absl::StatusCode::kInvalidArgument,
       "state.sums[1] (group \"\"): a second entry for the group"},
      {"short sums", [](AuditState& s) { s.sums[0].b.pop_back(); },
       absl::StatusCode::kInvalidArgument,
       "state.sums[0] (group \"\"): expected 64 cells (the audit's map length) per side, got 64 "
       "and 63"},
      {"cell over its bound",
       [](AuditState& s) { s.sums[0].a[9] = (static_cast<AuditFixed>(50) << 62) + 1; },
       absl::StatusCode::kInvalidArgument,
       "state.sums[0] (group \"\"): cell 9 is above 50 * 2^62 (50 items, each of mass at most 1 "
       "in a cell)"},
  };
  for (const Case& c : cases) {
    AuditState spoiled = good;
    c.spoil(spoiled);
    const absl::Status s = a.MergeState(spoiled);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s;
    EXPECT_EQ(s.message(), c.message) << c.name;
    EXPECT_EQ(Dump(a.Finish()), before) << c.name;
    EXPECT_EQ(a.items(), 150) << c.name;
  }
  // Groups over max_groups: RESOURCE_EXHAUSTED.
  AuditOptions few = o;
  few.max_groups = 2;
  AuditAggregator small = MustCreate(few);
  const absl::Status s = small.MergeState(good);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "state: its items bring the audit to 3 distinct groups, expected at most "
                         "max_groups = 2");
  EXPECT_EQ(small.items(), 0);
  // The good state still merges.
  ASSERT_TRUE(a.MergeState(good).ok());
  EXPECT_EQ(a.items(), 200);
}

// A float (or double) running sum of the same values does depend on the order;
// the fixed-point sums do not. Checks the premise on values like ours.
TEST(AuditReportTest, FloatingSumsWouldDependOnOrder) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<double> v(200);
  for (double& x : v) x = static_cast<double>(u(rng)) / 37.0;
  bool differs = false;
  const double ref = std::accumulate(v.begin(), v.end(), 0.0);
  for (int run = 0; run < 50 && !differs; ++run) {
    std::shuffle(v.begin(), v.end(), rng);
    differs = std::accumulate(v.begin(), v.end(), 0.0) != ref;
  }
  EXPECT_TRUE(differs);
}

// ---- groups ------------------------------------------------------------------------

TEST(AuditReportTest, GroupAggregatesEqualAuditsOfTheGroupAlone) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> pos(0.0, 7.0);
  const CompareSpec spec = GridSpec(/*region=*/true);
  AuditOptions o = GridOptions();
  o.thresholds.max_emd = 1.0;
  AuditAggregator all = MustCreate(o);
  AuditAggregator cat = MustCreate(o), dog = MustCreate(o);
  for (int i = 0; i < 45; ++i) {
    const std::string group = i % 3 == 0 ? "cat" : (i % 3 == 1 ? "dog" : "");
    const Map a = i % 3 == 0 ? LeftHeavy(rng) : Blob(pos(rng), pos(rng), 1.5, rng);
    const Map b = i % 3 == 0 ? Mirror(a) : Blob(pos(rng), pos(rng), 1.5, rng);
    const AuditItem item = MakeItem(absl::StrCat("i", i), group, a, b, spec);
    MustAdd(all, item);
    if (group == "cat") MustAdd(cat, item);
    if (group == "dog") MustAdd(dog, item);
  }
  const AuditReport r = all.Finish();
  EXPECT_EQ(r.overall.items, 45);
  ASSERT_EQ(r.groups.size(), 2u);  // "" is no group
  EXPECT_EQ(r.groups[0].group, "cat");
  EXPECT_EQ(r.groups[1].group, "dog");
  AuditAggregate cat_alone = cat.Finish().overall, dog_alone = dog.Finish().overall;
  cat_alone.group = "cat";
  dog_alone.group = "dog";
  EXPECT_EQ(Dump(r.groups[0]), Dump(cat_alone));
  EXPECT_EQ(Dump(r.groups[1]), Dump(dog_alone));
  EXPECT_EQ(r.groups[0].items, 15);
  EXPECT_EQ(r.groups[0].drifted, 15);  // every cat was mirrored
  EXPECT_EQ(r.groups[0].region.dropped, 15);
  EXPECT_LT(r.groups[0].mean_shift[0 * kW + 1], 0.0f);

  // Without group maps: same statistics, no maps.
  AuditOptions no_maps = o;
  no_maps.group_mean_maps = false;
  AuditAggregator lean = MustCreate(no_maps);
  rng.seed(11);
  for (int i = 0; i < 3; ++i) {
    const Map a = LeftHeavy(rng);
    MustAdd(lean, MakeItem(absl::StrCat("j", i), "cat", a, Mirror(a), spec));
  }
  const AuditReport lr = lean.Finish();
  ASSERT_EQ(lr.groups.size(), 1u);
  EXPECT_TRUE(lr.groups[0].mean_shift.empty());
  EXPECT_EQ(lr.groups[0].items, 3);
  EXPECT_EQ(lr.overall.mean_shift.size(), static_cast<size_t>(kN));
}

TEST(AuditReportTest, TooManyGroupsIsResourceExhaustedAndChangesNothing) {
  AuditOptions o = FlatOptions();
  o.max_groups = 2;
  AuditAggregator agg = MustCreate(o);
  MustAdd(agg, Scalars("a", "g1"));
  MustAdd(agg, Scalars("b", "g2"));
  MustAdd(agg, Scalars("c", "g1"));
  MustAdd(agg, Scalars("d", ""));
  const std::string before = Dump(agg.Finish());
  absl::StatusOr<std::vector<std::string>> f = agg.Add(Scalars("e", "g3"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(f.status().message().find("max_groups = 2"), std::string::npos) << f.status();
  EXPECT_EQ(Dump(agg.Finish()), before);
  EXPECT_TRUE(agg.Add(Scalars("e", "g2")).ok());  // the id was not taken
}

// ---- statistics by hand ---------------------------------------------------------------

TEST(AuditReportTest, QuantilesAsNumpyLinear) {
  // l1 = 0.5, 0.1, 0.4, 0.2, 0.3 (sorted 0.1 .. 0.5, m = 5):
  //   median: h = 2 -> 0.3; p10: h = 0.4 -> 0.1 + 0.4 * 0.1 = 0.14;
  //   p90: h = 3.6 -> 0.5 - (0.5 - 0.4) * 0.4 = 0.46; mean 0.3.
  // numpy.quantile([0.5, 0.1, 0.4, 0.2, 0.3], [0.1, 0.5, 0.9]) = [0.14, 0.3, 0.46]
  // (Debian 12's numpy; these quantiles are bit-equal to its output, and to the
  // doubles nearest the decimals).
  {
    AuditAggregator agg = MustCreate(FlatOptions());
    const double l1[] = {0.5, 0.1, 0.4, 0.2, 0.3};
    for (int i = 0; i < 5; ++i) {
      AuditItem it = Scalars(absl::StrCat("i", i));
      it.comparison.l1 = l1[i];
      MustAdd(agg, it);
    }
    const MetricSummary s =
        agg.Finish().overall.metric(AuditMetric::kL1);  // a copy: Finish() is a temporary
    EXPECT_EQ(s.count, 5);
    EXPECT_EQ(s.median, 0.3);
    EXPECT_EQ(s.p10, 0.14);
    EXPECT_EQ(s.p90, 0.46);
    EXPECT_DOUBLE_EQ(s.mean, 0.3);
    EXPECT_EQ(s.min, 0.1);
    EXPECT_EQ(s.max, 0.5);
  }
  // spearman = 4, 1, 3, 2 (m = 4; sorted 1..4): median h = 1.5 -> 2.5;
  // p10 h = 0.3 -> 1.3; p90 h = 2.7 -> 3.7; mean 2.5.
  {
    AuditAggregator agg = MustCreate(FlatOptions());
    const double v[] = {4, 1, 3, 2};
    for (int i = 0; i < 4; ++i) {
      AuditItem it = Scalars(absl::StrCat("i", i));
      it.comparison.spearman = v[i];
      MustAdd(agg, it);
    }
    const MetricSummary s =
        agg.Finish().overall.metric(AuditMetric::kSpearman);  // a copy: Finish() is a temporary
    EXPECT_EQ(s.median, 2.5);
    EXPECT_EQ(s.p10, 1.3);
    EXPECT_EQ(s.p90, 3.7);
    EXPECT_DOUBLE_EQ(s.mean, 2.5);
  }
  // One value: every statistic is that value; m copies of 0.1 average to 0.1.
  {
    AuditAggregator agg = MustCreate(FlatOptions());
    for (int i = 0; i < 3; ++i) {
      AuditItem it = Scalars(absl::StrCat("i", i));
      it.comparison.l2 = 0.1;
      if (i == 0) it.comparison.emd = 0.7;
      MustAdd(agg, it);
    }
    const AuditAggregate g = agg.Finish().overall;
    EXPECT_EQ(g.metric(AuditMetric::kL2).mean, 0.1);
    EXPECT_EQ(g.metric(AuditMetric::kL2).p90, 0.1);
    const MetricSummary& emd = g.metric(AuditMetric::kEmd);
    EXPECT_EQ(emd.count, 1);
    EXPECT_EQ(emd.undefined, 2);
    for (double x : {emd.mean, emd.median, emd.p10, emd.p90, emd.min, emd.max}) EXPECT_EQ(x, 0.7);
    EXPECT_EQ(emd.undefined_ids, (std::vector<std::string>{"i1", "i2"}));
  }
}

TEST(AuditReportTest, UndefinedMetricsAreCountedNotAveragedNorFlagged) {
  AuditOptions o = FlatOptions();
  o.thresholds.min_spearman = 0.5;
  o.thresholds.max_emd = 0.1;
  AuditAggregator agg = MustCreate(o);
  const std::pair<const char*, std::optional<double>> sp[] = {
      {"b", 0.9}, {"a", std::nullopt}, {"d", 0.1}, {"c", std::nullopt}};
  for (const auto& [id, v] : sp) {
    AuditItem it = Scalars(id);
    it.comparison.spearman = v;
    const std::vector<std::string> flags = MustAdd(agg, it);
    EXPECT_EQ(flags.size(), std::string(id) == "d" ? 1u : 0u) << id;
  }
  const AuditAggregate g = agg.Finish().overall;
  const MetricSummary& s = g.metric(AuditMetric::kSpearman);
  EXPECT_EQ(s.count, 2);
  EXPECT_EQ(s.undefined, 2);
  EXPECT_DOUBLE_EQ(s.mean, 0.5);
  EXPECT_EQ(s.undefined_ids, (std::vector<std::string>{"a", "c"}));
  // No EMD anywhere: count 0, statistics 0, no worst list, no flag.
  const MetricSummary& emd = g.metric(AuditMetric::kEmd);
  EXPECT_EQ(emd.count, 0);
  EXPECT_EQ(emd.undefined, 4);
  EXPECT_EQ(emd.mean, 0);
  EXPECT_TRUE(emd.worst.empty());
  EXPECT_EQ(g.flag_counts.at("max_emd"), 0);
  EXPECT_EQ(g.flag_counts.at("min_spearman"), 1);
  EXPECT_EQ(g.drifted_ids, (std::vector<std::string>{"d"}));
  // No region: no reliance summary.
  EXPECT_EQ(g.region.items, 0);
  EXPECT_EQ(g.metric(AuditMetric::kRegionShareDelta).undefined, 4);
}

TEST(AuditReportTest, WorstItemsFollowTheDriftDirectionAndTieById) {
  AuditOptions o = FlatOptions();
  o.worst_items = 3;
  AuditAggregator agg = MustCreate(o);
  // spearman (lower is worse): c 0.5, b 0.2, a 0.2, d 0.9, e 0.2.
  // l1 (higher is worse):      c 0.7, b 0.7, a 0.1, d 0.9, e 0.7.
  // region share delta (lower is worse): a -0.2, b 0.1, c -0.2, d 0, e 0.3.
  struct Row {
    const char* id;
    double spearman, l1, share_a, share_b;
  };
  const Row rows[] = {{"c", 0.5, 0.7, 0.5, 0.3},
                      {"b", 0.2, 0.7, 0.25, 0.35},
                      {"a", 0.2, 0.1, 0.5, 0.3},
                      {"d", 0.9, 0.9, 0.5, 0.5},
                      {"e", 0.2, 0.7, 0.25, 0.55}};
  for (const Row& row : rows) {
    AuditItem it = Scalars(row.id);
    it.comparison.spearman = row.spearman;
    it.comparison.l1 = row.l1;
    it.comparison.region_share_a = row.share_a;
    it.comparison.region_share_b = row.share_b;
    MustAdd(agg, it);
  }
  const AuditAggregate g = agg.Finish().overall;
  auto ids = [](const MetricSummary& s) {
    std::vector<std::string> out;
    for (const WorstItem& w : s.worst) out.push_back(absl::StrCat(w.id, "=", w.value));
    return out;
  };
  EXPECT_EQ(ids(g.metric(AuditMetric::kSpearman)),
            (std::vector<std::string>{"a=0.2", "b=0.2", "e=0.2"}));
  EXPECT_EQ(ids(g.metric(AuditMetric::kL1)), (std::vector<std::string>{"d=0.9", "b=0.7", "c=0.7"}));
  EXPECT_EQ(ids(g.metric(AuditMetric::kRegionShareDelta)),
            (std::vector<std::string>{"a=-0.2", "c=-0.2", "d=0"}));
  EXPECT_TRUE(g.metric(AuditMetric::kRegionShareA).worst.empty());  // no direction
  EXPECT_EQ(g.metric(AuditMetric::kRegionShareA).worse, WorseDirection::kNone);
  EXPECT_EQ(g.metric(AuditMetric::kCosine).worst.size(), 3u);
  EXPECT_EQ(g.region.dropped, 2);
  EXPECT_EQ(g.region.increased, 2);
  EXPECT_EQ(g.region.unchanged, 1);
  EXPECT_DOUBLE_EQ(g.region.dropped_fraction, 0.4);

  // Fewer items than worst_items; worst_items = 0.
  AuditOptions none = FlatOptions();
  none.worst_items = 0;
  AuditAggregator zero = MustCreate(none);
  MustAdd(zero, Scalars("only"));
  EXPECT_TRUE(zero.Finish().overall.metric(AuditMetric::kL1).worst.empty());
  AuditAggregator few = MustCreate(FlatOptions());
  MustAdd(few, Scalars("only"));
  EXPECT_EQ(few.Finish().overall.metric(AuditMetric::kL1).worst.size(), 1u);
}

TEST(AuditReportTest, ThresholdsAreTheWorstAcceptableValues) {
  AuditOptions o = FlatOptions();
  o.thresholds.min_spearman = 0.5;
  o.thresholds.max_l1 = 0.4;
  o.thresholds.max_region_share_drop = 0.1;
  AuditAggregator agg = MustCreate(o);
  AuditItem at = Scalars("at");  // exactly on every threshold: no flag
  at.comparison.spearman = 0.5;
  at.comparison.l1 = 0.4;
  at.comparison.region_share_a = 0.5;
  at.comparison.region_share_b = 0.375;  // drop 0.125 > 0.1: flagged
  EXPECT_EQ(MustAdd(agg, at), (std::vector<std::string>{"max_region_share_drop"}));
  AuditItem beyond = Scalars("beyond");
  beyond.comparison.spearman = 0.4999;
  beyond.comparison.l1 = 0.4001;
  beyond.comparison.region_share_a = 0.5;
  beyond.comparison.region_share_b = 0.5;
  EXPECT_EQ(MustAdd(agg, beyond), (std::vector<std::string>{"min_spearman", "max_l1"}));
  AuditItem gain = Scalars("gain");  // reliance moved INTO the region: no flag
  gain.comparison.region_share_a = 0.1;
  gain.comparison.region_share_b = 0.9;
  EXPECT_TRUE(MustAdd(agg, gain).empty());
  const AuditAggregate g = agg.Finish().overall;
  EXPECT_EQ(g.drifted, 2);
  EXPECT_EQ(g.drifted_ids, (std::vector<std::string>{"at", "beyond"}));
  EXPECT_EQ(g.flag_counts.size(), 3u);
}

// ---- memory -----------------------------------------------------------------------

TEST(AuditReportTest, MapMemoryDoesNotGrowWithItems) {
  AuditOptions o = FlatOptions(kN);
  o.max_groups = 3;
  AuditAggregator agg = MustCreate(o);
  const int64_t empty = agg.map_bytes();
  EXPECT_EQ(empty, 2 * kN * 16);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  Map a(kN), b(kN);
  auto add = [&](int i) {
    for (int j = 0; j < kN; ++j) {
      a[j] = u(rng);
      b[j] = u(rng);
    }
    AuditItem it;
    it.id = absl::StrCat("item", i);
    it.group = absl::StrCat("g", i % 3);
    it.comparison.cosine = 1;
    it.baseline = a;
    it.candidate = b;
    MustAdd(agg, it);
  };
  for (int i = 0; i < 10; ++i) add(i);
  const int64_t after10 = agg.map_bytes();
  EXPECT_EQ(after10, 4 * 2 * kN * 16);  // overall + 3 groups
  EXPECT_EQ(after10, AuditAggregator::MapBytesBound(o));
  const int64_t scalars10 = agg.scalar_bytes();
  for (int i = 10; i < 1000; ++i) add(i);
  EXPECT_EQ(agg.map_bytes(), after10);
  EXPECT_GT(agg.scalar_bytes(), scalars10);   // per-item scalars do grow
  EXPECT_LT(agg.scalar_bytes(), 1000 * 400);  // ... by a few hundred bytes each
  const AuditReport r = agg.Finish();
  EXPECT_EQ(r.overall.items, 1000);
  double total = 0;
  for (float v : r.overall.mean_candidate) total += v;
  EXPECT_NEAR(total, 1.0, 1e-5);
  AuditOptions lean = o;
  lean.group_mean_maps = false;
  EXPECT_EQ(AuditAggregator::MapBytesBound(lean), 2 * kN * 16);
}

// The mean maps are means of sum-normalised maps, to within fp32.
TEST(AuditReportTest, MeanMapsAreMeansOfNormalisedMaps) {
  AuditAggregator agg = MustCreate(FlatOptions(3));
  AuditItem x = Scalars("x");
  x.baseline = {1, 1, 2};   // / 4
  x.candidate = {0, 3, 0};  // / 3
  AuditItem y = Scalars("y");
  y.baseline = {5, 0, 5};  // / 10
  y.candidate = {1, 1, 2};
  MustAdd(agg, x);
  MustAdd(agg, y);
  const AuditAggregate g = agg.Finish().overall;
  const std::vector<float> mb = {(0.25f + 0.5f) / 2, 0.25f / 2, (0.5f + 0.5f) / 2};
  const std::vector<float> mc = {0.25f / 2, (1.0f + 0.25f) / 2, 0.5f / 2};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(g.mean_baseline[i], mb[i]) << i;
    EXPECT_EQ(g.mean_candidate[i], mc[i]) << i;
    EXPECT_EQ(g.mean_shift[i], mc[i] - mb[i]) << i;
  }
  // No items: no maps, every count 0.
  AuditAggregator empty = MustCreate(FlatOptions(3));
  const AuditReport r = empty.Finish();
  EXPECT_EQ(r.overall.items, 0);
  EXPECT_TRUE(r.overall.mean_baseline.empty());
  EXPECT_EQ(r.overall.metrics.size(), static_cast<size_t>(kNumAuditMetrics));
  EXPECT_EQ(r.overall.metric(AuditMetric::kL1).count, 0);
  EXPECT_TRUE(r.groups.empty());
}

// ---- bad inputs ----------------------------------------------------------------------

TEST(AuditReportTest, RejectsBadItemsAndLeavesTheAuditUnchanged) {
  AuditOptions o = FlatOptions();
  o.thresholds.max_l1 = 0.1;
  AuditAggregator agg = MustCreate(o);
  MustAdd(agg, Scalars("a", "g"));
  const std::string before = Dump(agg.Finish());
  const int64_t bytes = agg.map_bytes();

  auto expect_invalid = [&](const AuditItem& item, const std::string& needle) {
    absl::StatusOr<std::vector<std::string>> f = agg.Add(item);
    ASSERT_FALSE(f.ok()) << needle;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
    EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status();
    EXPECT_EQ(Dump(agg.Finish()), before) << needle;
    EXPECT_EQ(agg.items(), 1);
    EXPECT_EQ(agg.map_bytes(), bytes);
  };
  expect_invalid(Scalars("a", "other"), "\"a\": already added");
  expect_invalid(Scalars(""), "non-empty id");
  AuditItem bad = Scalars("b", "new");
  bad.baseline.assign(5, 1.0f);
  expect_invalid(bad, "baseline map: expected 4 entries (the audit's map length), got 5");
  bad = Scalars("b");
  bad.candidate.assign(3, 1.0f);
  expect_invalid(bad, "candidate map: expected 4 entries");
  bad = Scalars("b");
  bad.candidate[2] = -1;
  expect_invalid(bad, "candidate map: entry 2 is -1");
  bad = Scalars("b");
  bad.baseline[1] = std::nanf("");
  expect_invalid(bad, "baseline map: entry 1 is nan");
  bad = Scalars("b");
  bad.baseline.assign(4, 0.0f);
  expect_invalid(bad, "baseline map: every entry is 0");
  bad = Scalars("b");
  bad.comparison.l1 = std::nan("");
  expect_invalid(bad, "comparison.l1: is nan");
  bad = Scalars("b");
  bad.comparison.emd = INFINITY;
  expect_invalid(bad, "comparison.emd: is inf");
  bad = Scalars("b");
  bad.comparison.region_share_a = 0.5;
  expect_invalid(bad, "only region_share_a");
  // The view form: no comparison.
  const AuditItem ok = Scalars("b");
  AuditItemView view;
  view.id = ok.id;
  view.baseline = ok.baseline;
  view.candidate = ok.candidate;
  absl::StatusOr<std::vector<std::string>> f = agg.Add(view);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("no comparison"), std::string::npos) << f.status();
  EXPECT_EQ(Dump(agg.Finish()), before);
  view.comparison = &ok.comparison;
  EXPECT_TRUE(agg.Add(view).ok());  // "b" was never taken by the rejected items
  EXPECT_EQ(agg.items(), 2);
}

TEST(AuditReportTest, RejectsBadOptions) {
  auto expect_invalid = [](const AuditOptions& o, const std::string& needle) {
    absl::StatusOr<AuditAggregator> a = AuditAggregator::Create(o);
    ASSERT_FALSE(a.ok()) << needle;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(a.status().message().find(needle), std::string::npos) << a.status();
  };
  expect_invalid(AuditOptions{}, "map_length: expected >= 1, got 0");
  AuditOptions o = FlatOptions(64);
  o.grid_h = 8;
  expect_invalid(o, "grid: expected both sides > 0");
  o.grid_w = 7;
  expect_invalid(o, "8x7 = 56 cells, expected the map length 64");
  o = FlatOptions();
  o.worst_items = -1;
  expect_invalid(o, "worst_items");
  o = FlatOptions();
  o.max_drifted_ids = -1;
  expect_invalid(o, "max_drifted_ids");
  o = FlatOptions();
  o.max_groups = -1;
  expect_invalid(o, "max_groups");
  o = FlatOptions();
  o.thresholds.max_emd = std::nan("");
  expect_invalid(o, "thresholds.max_emd: expected a finite value");
  o = FlatOptions();
  o.thresholds.max_region_share_drop = -0.1;
  expect_invalid(o, "thresholds.max_region_share_drop: expected >= 0");
  EXPECT_TRUE(AuditAggregator::Create(GridOptions()).ok());
}

TEST(AuditReportTest, MetricNamesAndDirections) {
  const char* names[] = {"spearman",
                         "kendall_tau_b",
                         "pearson",
                         "cosine",
                         "top_k_iou",
                         "l1",
                         "l2",
                         "js_divergence",
                         "ssim",
                         "emd",
                         "com_shift",
                         "region_share_a",
                         "region_share_b",
                         "region_share_delta"};
  for (int m = 0; m < kNumAuditMetrics; ++m)
    EXPECT_EQ(AuditMetricName(static_cast<AuditMetric>(m)), names[m]);
  EXPECT_EQ(AuditMetricWorse(AuditMetric::kEmd), WorseDirection::kHigher);
  EXPECT_EQ(AuditMetricWorse(AuditMetric::kSsim), WorseDirection::kLower);
}

}  // namespace
}  // namespace attnroll::analysis
