// Aggregation of an audit over a dataset (docs/conventions.md, "Audit report"): the
// per-item comparisons of a baseline and a candidate model (compare.h) folded
// into one report. Pure math: absl + std. No gRPC, no threads, no I/O; the
// service computes each item's Comparison on its worker pool (CompareMaps is
// pure and thread-safe), then hands the item to one AuditAggregator under its
// own lock (Add is O(n + |id|) and allocates nothing per item beyond its scalars).
//
// What is kept. Per item: its id, its group and one double per metric (below),
// ~200 bytes plus the id (scalar_bytes()); they give exact quantiles and the
// worst-items lists. The item's Comparison is taken as given (it must come from
// CompareMaps of the same two maps; the aggregator does not recompute it).
// Maps are NOT kept: each item's two maps are folded into running sums at once,
// so map memory is fixed when the aggregator is created, whatever the number of
// items (map_bytes() == MapBytesBound(options) minus the groups not seen yet;
// see "Groups").
//
// Metrics (AuditMetric, in this order in every report; names as compare.h and
// the proto): spearman, kendall_tau_b, pearson, cosine, top_k_iou, l1, l2,
// js_divergence, ssim, emd, com_shift, region_share_a, region_share_b and
// region_share_delta = region_share_b - region_share_a (the reliance shift: < 0
// when the candidate put less of its mass inside the region). A metric the
// Comparison left undefined (nullopt: constant map, no grid, EMD over its arc
// cap, no region) is COUNTED in `undefined`, never averaged, and never raises a
// drift flag.
//
// Statistics of a metric over the items where it is defined (count >= 1; when
// count == 0 every statistic is 0 and `worst` is empty: read count first):
//   mean         sum / count, summed (Neumaier) over the values sorted ascending,
//                then clamped to [min, max] (so m copies of x give x).
//   median, p10, p90
//                numpy.quantile's default ('linear', type 7): sorted x[0..m-1],
//                h = (m - 1) q, j = floor(h), t = h - j, with numpy's lerp:
//                x[j] + (x[j+1] - x[j]) t when t < 0.5, else
//                x[j+1] - (x[j+1] - x[j]) (1 - t). median = quantile 0.5.
//   min, max     over the defined values.
//   worst        the worst_items items furthest in the direction of drift:
//                LOWEST spearman, kendall_tau_b, pearson, cosine, top_k_iou, ssim,
//                region_share_delta; HIGHEST l1, l2, js_divergence, emd, com_shift;
//                none for region_share_a / region_share_b (no direction is worse).
//                Equal values are ordered by id (byte-wise ascending).
//   undefined_ids  up to worst_items ids of items where it is undefined, smallest first.
//
// Mean maps. Every map is first divided by its own sum (in double), as every
// distance metric of compare.h does: the mean maps are mean DISTRIBUTIONS, each
// item weighing the same whatever the read-out's scaling, and they agree with
// the region shares: the sum of mean_shift over a region equals the mean
// region_share_delta (up to rounding) when every item has a region share.
//   mean_baseline[i]  = mean over items of a_i / sum(a)
//   mean_candidate[i] = mean over items of b_i / sum(b)
//   mean_shift[i]     = mean_candidate[i] - mean_baseline[i]  (row-major on the grid)
// Exactness: each normalised value v in [0, 1] is rounded once to the fixed point
// integer round(v * 2^62) and the integers are summed exactly (128-bit), so the
// sums, and therefore the maps, are bit-identical whatever the order items are
// added (floating sums, compensated or not, are not). Resolution 2^-62 ~ 2.2e-19
// of an item's mass per cell (far below fp32's); no overflow below 2^65 items.
// The mean is computed from the exact integer sum (the shift from the exact
// integer difference, so no cancellation) and stored as fp32.
//
// Order independence. Every statistic comes from the multiset of items: values
// are sorted (ties by id), sums of maps are exact, lists are sorted by id. The
// report is bit-identical whatever order the same items are added in (tested).
//
// Drift. Client thresholds (DriftThresholds, each optional) are the worst
// ACCEPTABLE values: an item is flagged for min_X when X < min_X, for max_X when
// X > max_X (strictly), and for max_region_share_drop when region_share_a -
// region_share_b > max_region_share_drop. Add returns the names of the
// thresholds an item crossed (threshold field names, e.g. "max_emd", in
// DriftThresholds order); an item is drifted when it crossed at least one. The
// report counts drifted items and items per threshold, and lists drifted ids
// (sorted by id, at most max_drifted_ids: the report stays bounded; the
// per-item flags are what Add returned).
//
// Groups. An item's optional group label (domain, class) puts it also in that
// group's aggregate (same statistics, drift counts and, when group_mean_maps,
// mean maps). The label "" means no group: such items are in the overall
// aggregate only. Groups in the report are sorted by label. At most max_groups
// distinct labels (RESOURCE_EXHAUSTED for the first item of one more); map memory
// is bounded by (1 + max_groups) * 2 * n * 16 bytes (MapBytesBound).
//
// Errors. Add rejects an item (INVALID_ARGUMENT; message names the field, the
// expected and the seen value) for: an empty id or one already added, maps of a
// length other than map_length, a map entry NaN/Inf or negative, a map summing
// to 0, a NaN/Inf metric in the Comparison, or region_share_a set without
// region_share_b (or the reverse). A rejected item changes nothing: the caller
// may report it and carry on.
//
// Merging. ExportState() gives what the report needs (each record's id, group
// and metric values; the exact sums per aggregate); MergeState() adds a state
// exported by another aggregator with the same options. Since every statistic
// depends only on the multiset of records and the exact integer sums, the
// report of the merged aggregator equals, bit for bit, the report of one
// aggregator fed every item. MergeState validates the whole state before it
// changes anything: ids (non-empty, not already added, not repeated within
// the state), 14 values per item (finite or NaN, region shares both or
// neither, the delta equal to b - a), the sums (one overall entry, one per
// group of the state's items exactly when group_mean_maps, map_length cells,
// no cell above count * 2^62) and max_groups. Drift flags are recomputed from
// the values.
//
// Thread-safety: none. One owner, or every call under one mutex. Finish is const
// and may be called at any time (a snapshot), e.g. for progress.
#ifndef ATTNROLL_SERVER_ANALYSIS_AUDIT_REPORT_H_
#define ATTNROLL_SERVER_ANALYSIS_AUDIT_REPORT_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/analysis/compare.h"

namespace attnroll::analysis {

enum class AuditMetric : int {
  kSpearman = 0,
  kKendallTauB,
  kPearson,
  kCosine,
  kTopKIou,
  kL1,
  kL2,
  kJsDivergence,
  kSsim,
  kEmd,
  kComShift,
  kRegionShareA,
  kRegionShareB,
  kRegionShareDelta,
};
inline constexpr int kNumAuditMetrics = 14;

// Which direction is drift for a metric (the order of its `worst` list).
enum class WorseDirection { kLower, kHigher, kNone };

// "spearman", "kendall_tau_b", ..., "region_share_delta".
std::string_view AuditMetricName(AuditMetric metric);
WorseDirection AuditMetricWorse(AuditMetric metric);

// Worst acceptable values (unset: not checked). Finite values only.
struct DriftThresholds {
  std::optional<double> min_spearman, min_kendall_tau_b, min_pearson, min_cosine, min_top_k_iou,
      min_ssim;
  std::optional<double> max_l1, max_l2, max_js_divergence, max_emd, max_com_shift;
  // Flag when region_share_a - region_share_b exceeds this (share points, e.g. 0.1).
  std::optional<double> max_region_share_drop;
};

struct AuditOptions {
  int map_length = 0;          // n, >= 1: every map of every item
  int grid_h = 0, grid_w = 0;  // both 0 (flat maps) or h * w = n; echoed in the report
  DriftThresholds thresholds;
  int worst_items = 10;         // >= 0: length of every worst / undefined_ids list
  int max_drifted_ids = 1000;   // >= 0: cap of each drifted_ids list
  int max_groups = 256;         // >= 0: distinct non-empty group labels
  bool group_mean_maps = true;  // mean maps per group too (memory: see MapBytesBound)
};

// One finished item (views: nothing is kept but its scalars).
struct AuditItemView {
  absl::string_view id;                         // non-empty, unique within the audit
  absl::string_view group;                      // "" = no group
  const Comparison* comparison = nullptr;       // CompareMaps(baseline, candidate, spec)
  absl::Span<const float> baseline, candidate;  // the two maps, length n
};

// The same, owning (convenient for tests and small callers).
struct AuditItem {
  std::string id;
  std::string group;
  Comparison comparison;
  std::vector<float> baseline, candidate;
};

struct WorstItem {
  std::string id;
  double value = 0;
};

struct MetricSummary {
  std::string metric;  // AuditMetricName
  WorseDirection worse = WorseDirection::kNone;
  int64_t count = 0;      // items where it is defined
  int64_t undefined = 0;  // items where it is not (count + undefined = items)
  double mean = 0, median = 0, p10 = 0, p90 = 0, min = 0, max = 0;  // valid when count > 0
  std::vector<WorstItem> worst;                                     // see the header comment
  std::vector<std::string> undefined_ids;  // up to worst_items, smallest ids first
};

// Reliance shift over the items with region shares.
struct RegionSummary {
  int64_t items = 0;  // items with region shares (0: no region was given)
  double mean_share_a = 0, mean_share_b = 0, mean_delta = 0;  // as MetricSummary::mean
  int64_t dropped = 0, increased = 0, unchanged = 0;          // delta < 0, > 0, == 0
  double dropped_fraction = 0;                                // dropped / items (0 when items == 0)
};

struct AuditAggregate {
  std::string group;  // "" for the whole audit
  int64_t items = 0;
  std::vector<MetricSummary> metrics;  // kNumAuditMetrics entries, in AuditMetric order
  RegionSummary region;
  // Length n, row-major on the grid; empty when items == 0 (and for groups when
  // group_mean_maps is off).
  std::vector<float> mean_baseline, mean_candidate, mean_shift;
  int64_t drifted = 0;  // items that crossed at least one threshold
  // Threshold name -> items that crossed it; every SET threshold appears (0 too).
  std::map<std::string, int64_t> flag_counts;
  std::vector<std::string> drifted_ids;  // sorted, at most max_drifted_ids
  bool drifted_ids_truncated = false;    // drifted > drifted_ids.size()

  const MetricSummary& metric(AuditMetric m) const { return metrics[static_cast<int>(m)]; }
};

struct AuditReport {
  int map_length = 0, grid_h = 0, grid_w = 0;
  AuditAggregate overall;
  std::vector<AuditAggregate> groups;  // one per non-empty label seen, sorted by label
};

// unsigned 128-bit: a fixed-point sum of round(v * 2^62), v in [0, 1].
__extension__ typedef unsigned __int128 AuditFixed;

struct AuditStateItem {
  std::string id, group;
  std::array<double, kNumAuditMetrics> value;  // NaN = undefined
};

struct AuditStateSums {
  std::string group;  // "" = the whole audit
  std::vector<AuditFixed> a, b;
};

// What an aggregator's report depends on (see "Merging").
struct AuditState {
  std::vector<AuditStateItem> items;  // sorted by id
  std::vector<AuditStateSums> sums;   // overall first, then groups by label
};

class AuditAggregator {
 public:
  // INVALID_ARGUMENT for map_length < 1, a grid with one side 0 or h * w != n,
  // negative worst_items / max_drifted_ids / max_groups, a NaN/Inf threshold or a
  // negative max_region_share_drop.
  static absl::StatusOr<AuditAggregator> Create(const AuditOptions& options);

  // Upper bound of map_bytes() over the aggregator's life (for memory budgets).
  static int64_t MapBytesBound(const AuditOptions& options);

  // Adds one item; returns the thresholds it crossed (empty: no drift). Errors:
  // see the header comment; a rejected item leaves the aggregator unchanged.
  absl::StatusOr<std::vector<std::string>> Add(const AuditItemView& item);
  absl::StatusOr<std::vector<std::string>> Add(const AuditItem& item);

  // The report of the items added so far (does not depend on their order).
  // O(M log M) per metric and group, M = items.
  AuditReport Finish() const;

  // The records and sums (see "Merging"); O(M log M + groups * n).
  AuditState ExportState() const;

  // Adds another aggregator's exported state (same options); errors leave
  // this aggregator unchanged. INVALID_ARGUMENT / RESOURCE_EXHAUSTED (groups)
  // naming the item or the sums' entry.
  absl::Status MergeState(const AuditState& state);

  int64_t items() const { return static_cast<int64_t>(records_.size()); }
  const AuditOptions& options() const { return options_; }
  // Bytes held by the running map sums (fixed per group, independent of items).
  int64_t map_bytes() const;
  // Approximate bytes held per item (scalars, ids): grows linearly with items.
  int64_t scalar_bytes() const;

  AuditAggregator(AuditAggregator&&) = default;
  AuditAggregator& operator=(AuditAggregator&&) = default;

 private:
  typedef AuditFixed Fixed;

  struct MapSums {
    std::vector<Fixed> a, b;
  };
  struct GroupState {
    std::string label;
    std::unique_ptr<MapSums> sums;  // null when group_mean_maps is off
  };
  struct Record {
    const std::string* id;                       // owned by ids_ (node-based: stable)
    int32_t group;                               // index into groups_, -1 = none
    uint32_t flags;                              // bit t: threshold t crossed
    std::array<double, kNumAuditMetrics> value;  // NaN = undefined
  };

  explicit AuditAggregator(const AuditOptions& options);
  AuditAggregate Aggregate(const std::string& label, const std::vector<size_t>& members,
                           const MapSums* sums) const;

  AuditOptions options_;
  MapSums sums_;
  std::unordered_set<std::string> ids_;
  std::vector<GroupState> groups_;
  std::unordered_map<std::string, int32_t> group_index_;
  std::vector<Record> records_;
  int64_t id_bytes_ = 0;
};

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_AUDIT_REPORT_H_
