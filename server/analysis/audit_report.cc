#include "server/analysis/audit_report.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnroll::analysis {
namespace {

constexpr double kFixedScale = 0x1p62;  // 2^62: v in [0, 1] -> [0, 2^62]
constexpr double kUndefined = std::numeric_limits<double>::quiet_NaN();

struct MetricInfo {
  const char* name;
  WorseDirection worse;
};

constexpr std::array<MetricInfo, kNumAuditMetrics> kMetrics = {{
    {"spearman", WorseDirection::kLower},
    {"kendall_tau_b", WorseDirection::kLower},
    {"pearson", WorseDirection::kLower},
    {"cosine", WorseDirection::kLower},
    {"top_k_iou", WorseDirection::kLower},
    {"l1", WorseDirection::kHigher},
    {"l2", WorseDirection::kHigher},
    {"js_divergence", WorseDirection::kHigher},
    {"ssim", WorseDirection::kLower},
    {"emd", WorseDirection::kHigher},
    {"com_shift", WorseDirection::kHigher},
    {"region_share_a", WorseDirection::kNone},
    {"region_share_b", WorseDirection::kNone},
    {"region_share_delta", WorseDirection::kLower},
}};

// kMin: flagged when value < bound; kMax: value > bound; kMaxDrop: -value > bound.
enum class Bound { kMin, kMax, kMaxDrop };

struct ThresholdInfo {
  const char* name;
  AuditMetric metric;
  Bound bound;
  std::optional<double> DriftThresholds::*field;
};

constexpr std::array<ThresholdInfo, 12> kThresholds = {{
    {"min_spearman", AuditMetric::kSpearman, Bound::kMin, &DriftThresholds::min_spearman},
    {"min_kendall_tau_b", AuditMetric::kKendallTauB, Bound::kMin,
     &DriftThresholds::min_kendall_tau_b},
    {"min_pearson", AuditMetric::kPearson, Bound::kMin, &DriftThresholds::min_pearson},
    {"min_cosine", AuditMetric::kCosine, Bound::kMin, &DriftThresholds::min_cosine},
    {"min_top_k_iou", AuditMetric::kTopKIou, Bound::kMin, &DriftThresholds::min_top_k_iou},
    {"min_ssim", AuditMetric::kSsim, Bound::kMin, &DriftThresholds::min_ssim},
    {"max_l1", AuditMetric::kL1, Bound::kMax, &DriftThresholds::max_l1},
    {"max_l2", AuditMetric::kL2, Bound::kMax, &DriftThresholds::max_l2},
    {"max_js_divergence", AuditMetric::kJsDivergence, Bound::kMax,
     &DriftThresholds::max_js_divergence},
    {"max_emd", AuditMetric::kEmd, Bound::kMax, &DriftThresholds::max_emd},
    {"max_com_shift", AuditMetric::kComShift, Bound::kMax, &DriftThresholds::max_com_shift},
    {"max_region_share_drop", AuditMetric::kRegionShareDelta, Bound::kMaxDrop,
     &DriftThresholds::max_region_share_drop},
}};

// Checks one map (length, finite, >= 0, positive sum); returns its sum in double.
absl::Status CheckMap(const char* name, absl::Span<const float> x, int n, double* sum) {
  if (static_cast<int64_t>(x.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected ", n, " entries (the audit's map length), got ", x.size()));
  }
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": entry ", i, " is ", v, ", expected a finite value"));
    }
    if (v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": entry ", i, " is ", v, ", expected >= 0 (a saliency mass)"));
    }
    s += v;
  }
  if (!(s > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": every entry is 0, expected a positive sum"));
  }
  *sum = s;
  return absl::OkStatus();
}

// Reads one metric of a Comparison into `out` (NaN = undefined); a non-finite
// value is INVALID_ARGUMENT (it would break the sorted statistics).
absl::Status Read(const char* name, const std::optional<double>& v, double* out) {
  if (!v.has_value()) {
    *out = kUndefined;
    return absl::OkStatus();
  }
  if (!std::isfinite(*v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("comparison.", name, ": is ", *v, ", expected a finite value"));
  }
  *out = *v + 0.0;  // -0.0 -> +0.0: equal values must have equal bits
  return absl::OkStatus();
}

absl::Status ReadMetrics(const Comparison& c, std::array<double, kNumAuditMetrics>* v) {
  auto at = [&](AuditMetric m) { return &(*v)[static_cast<int>(m)]; };
  absl::Status s;
  if (!(s = Read("spearman", c.spearman, at(AuditMetric::kSpearman))).ok()) return s;
  if (!(s = Read("kendall_tau_b", c.kendall_tau_b, at(AuditMetric::kKendallTauB))).ok()) return s;
  if (!(s = Read("pearson", c.pearson, at(AuditMetric::kPearson))).ok()) return s;
  if (!(s = Read("cosine", c.cosine, at(AuditMetric::kCosine))).ok()) return s;
  if (!(s = Read("top_k_iou", c.top_k_iou, at(AuditMetric::kTopKIou))).ok()) return s;
  if (!(s = Read("l1", c.l1, at(AuditMetric::kL1))).ok()) return s;
  if (!(s = Read("l2", c.l2, at(AuditMetric::kL2))).ok()) return s;
  if (!(s = Read("js_divergence", c.js_divergence, at(AuditMetric::kJsDivergence))).ok()) return s;
  if (!(s = Read("ssim", c.ssim, at(AuditMetric::kSsim))).ok()) return s;
  if (!(s = Read("emd", c.emd, at(AuditMetric::kEmd))).ok()) return s;
  if (!(s = Read("com_shift", c.com_shift, at(AuditMetric::kComShift))).ok()) return s;
  if (!(s = Read("region_share_a", c.region_share_a, at(AuditMetric::kRegionShareA))).ok())
    return s;
  if (!(s = Read("region_share_b", c.region_share_b, at(AuditMetric::kRegionShareB))).ok())
    return s;
  if (c.region_share_a.has_value() != c.region_share_b.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "comparison.region_share_a and region_share_b: expected both set or both unset, got ",
        c.region_share_a.has_value() ? "only region_share_a" : "only region_share_b"));
  }
  *at(AuditMetric::kRegionShareDelta) =
      c.region_share_a.has_value()
          ? (*at(AuditMetric::kRegionShareB) - *at(AuditMetric::kRegionShareA)) + 0.0
          : kUndefined;
  return absl::OkStatus();
}

// numpy.quantile(x, q) with method 'linear' (numpy's _lerp) of sorted x, x non-empty.
double Quantile(const std::vector<double>& x, double q) {
  const size_t m = x.size();
  if (m == 1) return x[0];
  const double h = static_cast<double>(m - 1) * q;
  const double jf = std::floor(h);
  const size_t j = std::min(static_cast<size_t>(jf), m - 1);
  const size_t k = std::min(j + 1, m - 1);
  const double t = h - jf;
  const double a = x[j], b = x[k];
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

// Neumaier sum of x in its order (deterministic for a fixed order).
double Sum(const std::vector<double>& x) {
  double s = 0, c = 0;
  for (double v : x) {
    const double t = s + v;
    if (std::abs(s) >= std::abs(v)) {
      c += (s - t) + v;
    } else {
      c += (v - t) + s;
    }
    s = t;
  }
  return s + c;
}

struct Entry {
  double value;
  const std::string* id;
};

bool AscendingThenId(const Entry& x, const Entry& y) {
  if (x.value != y.value) return x.value < y.value;
  return *x.id < *y.id;
}

bool DescendingThenId(const Entry& x, const Entry& y) {
  if (x.value != y.value) return x.value > y.value;
  return *x.id < *y.id;
}

// The thresholds `value` crosses: bit t for kThresholds[t]; their names
// appended to `names` (may be null), in kThresholds' order.
uint32_t DriftBits(const DriftThresholds& thresholds,
                   const std::array<double, kNumAuditMetrics>& value,
                   std::vector<std::string>* names) {
  uint32_t bits = 0;
  for (size_t t = 0; t < kThresholds.size(); ++t) {
    const ThresholdInfo& info = kThresholds[t];
    const std::optional<double>& bound = thresholds.*(info.field);
    if (!bound.has_value()) continue;
    const double v = value[static_cast<int>(info.metric)];
    if (std::isnan(v)) continue;  // undefined: counted, never flagged
    bool crossed = false;
    switch (info.bound) {
      case Bound::kMin:
        crossed = v < *bound;
        break;
      case Bound::kMax:
        crossed = v > *bound;
        break;
      case Bound::kMaxDrop:
        crossed = -v > *bound;
        break;
    }
    if (crossed) {
      bits |= uint32_t{1} << t;
      if (names != nullptr) names->emplace_back(info.name);
    }
  }
  return bits;
}

// Mean of `count` fixed-point values summing to `sum`, as a double.
double FixedMean(unsigned __int128 sum, int64_t count) {
  return static_cast<double>(sum) / kFixedScale / static_cast<double>(count);
}

}  // namespace

std::string_view AuditMetricName(AuditMetric metric) {
  return kMetrics[static_cast<int>(metric)].name;
}

WorseDirection AuditMetricWorse(AuditMetric metric) {
  return kMetrics[static_cast<int>(metric)].worse;
}

absl::StatusOr<AuditAggregator> AuditAggregator::Create(const AuditOptions& options) {
  if (options.map_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("map_length: expected >= 1, got ", options.map_length));
  }
  const AuditOptions& o = options;
  if (o.grid_h < 0 || o.grid_w < 0 || (o.grid_h == 0) != (o.grid_w == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grid: expected both sides > 0 (or both 0 for flat maps), got ", o.grid_h, "x", o.grid_w));
  }
  if (o.grid_h > 0 && static_cast<int64_t>(o.grid_h) * o.grid_w != o.map_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grid: ", o.grid_h, "x", o.grid_w, " = ", static_cast<int64_t>(o.grid_h) * o.grid_w,
        " cells, expected the map length ", o.map_length));
  }
  if (o.worst_items < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("worst_items: expected >= 0, got ", o.worst_items));
  }
  if (o.max_drifted_ids < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_drifted_ids: expected >= 0, got ", o.max_drifted_ids));
  }
  if (o.max_groups < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_groups: expected >= 0, got ", o.max_groups));
  }
  for (const ThresholdInfo& t : kThresholds) {
    const std::optional<double>& v = o.thresholds.*(t.field);
    if (!v.has_value()) continue;
    if (!std::isfinite(*v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("thresholds.", t.name, ": expected a finite value, got ", *v));
    }
    if (t.bound == Bound::kMaxDrop && *v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "thresholds.", t.name, ": expected >= 0 (a drop of region share), got ", *v));
    }
  }
  return AuditAggregator(options);
}

AuditAggregator::AuditAggregator(const AuditOptions& options) : options_(options) {
  sums_.a.assign(options_.map_length, 0);
  sums_.b.assign(options_.map_length, 0);
}

int64_t AuditAggregator::MapBytesBound(const AuditOptions& options) {
  const int64_t per = 2 * static_cast<int64_t>(std::max(options.map_length, 0)) *
                      static_cast<int64_t>(sizeof(Fixed));
  const int64_t groups = options.group_mean_maps ? std::max(options.max_groups, 0) : 0;
  return (1 + groups) * per;
}

int64_t AuditAggregator::map_bytes() const {
  auto bytes = [](const MapSums& s) {
    return static_cast<int64_t>((s.a.capacity() + s.b.capacity()) * sizeof(Fixed));
  };
  int64_t total = bytes(sums_);
  for (const GroupState& g : groups_)
    if (g.sums != nullptr) total += bytes(*g.sums);
  return total;
}

int64_t AuditAggregator::scalar_bytes() const {
  // Records, the id set's nodes and buckets (approximate), the ids' heap bytes.
  const int64_t per_id = static_cast<int64_t>(sizeof(std::string) + 2 * sizeof(void*) + 8);
  return static_cast<int64_t>(records_.capacity() * sizeof(Record)) +
         static_cast<int64_t>(ids_.size()) * per_id +
         static_cast<int64_t>(ids_.bucket_count() * sizeof(void*)) + id_bytes_;
}

absl::StatusOr<std::vector<std::string>> AuditAggregator::Add(const AuditItem& item) {
  AuditItemView view;
  view.id = item.id;
  view.group = item.group;
  view.comparison = &item.comparison;
  view.baseline = item.baseline;
  view.candidate = item.candidate;
  return Add(view);
}

absl::StatusOr<std::vector<std::string>> AuditAggregator::Add(const AuditItemView& item) {
  // ---- validate everything before changing anything ----
  if (item.id.empty()) {
    return absl::InvalidArgumentError("item id: expected a non-empty id, got \"\"");
  }
  const std::string id(item.id.data(), item.id.size());
  const std::string label(item.group.data(), item.group.size());
  if (ids_.count(id) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "item id \"", item.id, "\": already added (ids must be unique within an audit)"));
  }
  if (item.comparison == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("item \"", item.id, "\": no comparison"));
  }
  const int n = options_.map_length;
  double sum_a = 0, sum_b = 0;
  absl::Status s = CheckMap("baseline map", item.baseline, n, &sum_a);
  if (s.ok()) s = CheckMap("candidate map", item.candidate, n, &sum_b);
  Record record;
  if (s.ok()) s = ReadMetrics(*item.comparison, &record.value);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("item \"", item.id, "\": ", s.message()));
  }
  int32_t group = -1;
  bool new_group = false;
  if (!item.group.empty()) {
    auto it = group_index_.find(label);
    if (it != group_index_.end()) {
      group = it->second;
    } else if (static_cast<int64_t>(groups_.size()) >= options_.max_groups) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "item \"", item.id, "\": group \"", item.group, "\" would be group ", groups_.size() + 1,
          ", expected at most max_groups = ", options_.max_groups, " distinct groups"));
    } else {
      new_group = true;
    }
  }

  // ---- drift flags ----
  std::vector<std::string> flags;
  const uint32_t bits = DriftBits(options_.thresholds, record.value, &flags);

  // ---- commit ----
  if (new_group) {
    group = static_cast<int32_t>(groups_.size());
    GroupState g;
    g.label = label;
    if (options_.group_mean_maps) {
      g.sums = std::make_unique<MapSums>();
      g.sums->a.assign(n, 0);
      g.sums->b.assign(n, 0);
    }
    groups_.push_back(std::move(g));
    group_index_.emplace(label, group);
  }
  MapSums* group_sums = group >= 0 ? groups_[group].sums.get() : nullptr;
  auto fold = [&](absl::Span<const float> x, double sum, std::vector<Fixed>* total,
                  std::vector<Fixed>* group_total) {
    for (int i = 0; i < n; ++i) {
      // x[i] <= sum (a float sum of non-negative terms never drops below one of
      // them), so v is in [0, 1] and the rounded value fits in 63 bits.
      const double v = static_cast<double>(x[i]) / sum;
      const Fixed q = static_cast<Fixed>(static_cast<uint64_t>(std::llround(v * kFixedScale)));
      (*total)[i] += q;
      if (group_total != nullptr) (*group_total)[i] += q;
    }
  };
  fold(item.baseline, sum_a, &sums_.a, group_sums != nullptr ? &group_sums->a : nullptr);
  fold(item.candidate, sum_b, &sums_.b, group_sums != nullptr ? &group_sums->b : nullptr);

  auto inserted = ids_.insert(id);
  id_bytes_ += static_cast<int64_t>(item.id.size());
  record.id = &*inserted.first;
  record.group = group;
  record.flags = bits;
  records_.push_back(record);
  return flags;
}

AuditAggregate AuditAggregator::Aggregate(const std::string& label,
                                          const std::vector<size_t>& members,
                                          const MapSums* sums) const {
  AuditAggregate out;
  out.group = label;
  out.items = static_cast<int64_t>(members.size());
  const size_t k = static_cast<size_t>(options_.worst_items);

  std::vector<Entry> entries;
  std::vector<double> values;
  std::vector<const std::string*> undefined;
  entries.reserve(members.size());
  values.reserve(members.size());
  out.metrics.resize(kNumAuditMetrics);
  for (int m = 0; m < kNumAuditMetrics; ++m) {
    MetricSummary& ms = out.metrics[m];
    ms.metric = kMetrics[m].name;
    ms.worse = kMetrics[m].worse;
    entries.clear();
    undefined.clear();
    for (size_t r : members) {
      const Record& rec = records_[r];
      const double v = rec.value[m];
      if (std::isnan(v)) {
        undefined.push_back(rec.id);
      } else {
        entries.push_back({v, rec.id});
      }
    }
    ms.count = static_cast<int64_t>(entries.size());
    ms.undefined = static_cast<int64_t>(undefined.size());
    const size_t nu = std::min(k, undefined.size());
    std::partial_sort(undefined.begin(), undefined.begin() + nu, undefined.end(),
                      [](const std::string* x, const std::string* y) { return *x < *y; });
    for (size_t i = 0; i < nu; ++i) ms.undefined_ids.push_back(*undefined[i]);
    if (entries.empty()) continue;

    std::sort(entries.begin(), entries.end(), AscendingThenId);
    values.clear();
    for (const Entry& e : entries) values.push_back(e.value);
    ms.min = values.front();
    ms.max = values.back();
    ms.mean = std::clamp(Sum(values) / static_cast<double>(values.size()), ms.min, ms.max);
    ms.median = Quantile(values, 0.5);
    ms.p10 = Quantile(values, 0.1);
    ms.p90 = Quantile(values, 0.9);
    const size_t nw = std::min(k, entries.size());
    if (ms.worse == WorseDirection::kLower) {
      for (size_t i = 0; i < nw; ++i) ms.worst.push_back({*entries[i].id, entries[i].value});
    } else if (ms.worse == WorseDirection::kHigher) {
      std::partial_sort(entries.begin(), entries.begin() + nw, entries.end(), DescendingThenId);
      for (size_t i = 0; i < nw; ++i) ms.worst.push_back({*entries[i].id, entries[i].value});
    }
  }

  // Reliance shift.
  const MetricSummary& sa = out.metric(AuditMetric::kRegionShareA);
  const MetricSummary& sb = out.metric(AuditMetric::kRegionShareB);
  const MetricSummary& sd = out.metric(AuditMetric::kRegionShareDelta);
  out.region.items = sd.count;
  out.region.mean_share_a = sa.mean;
  out.region.mean_share_b = sb.mean;
  out.region.mean_delta = sd.mean;
  for (size_t r : members) {
    const double d = records_[r].value[static_cast<int>(AuditMetric::kRegionShareDelta)];
    if (std::isnan(d)) continue;
    if (d < 0) {
      ++out.region.dropped;
    } else if (d > 0) {
      ++out.region.increased;
    } else {
      ++out.region.unchanged;
    }
  }
  out.region.dropped_fraction = out.region.items > 0 ? static_cast<double>(out.region.dropped) /
                                                           static_cast<double>(out.region.items)
                                                     : 0.0;

  // Drift.
  for (size_t t = 0; t < kThresholds.size(); ++t) {
    if (!(options_.thresholds.*(kThresholds[t].field)).has_value()) continue;
    int64_t c = 0;
    for (size_t r : members) c += (records_[r].flags >> t) & 1u;
    out.flag_counts[kThresholds[t].name] = c;
  }
  std::vector<const std::string*> drifted;
  for (size_t r : members)
    if (records_[r].flags != 0) drifted.push_back(records_[r].id);
  out.drifted = static_cast<int64_t>(drifted.size());
  const size_t nd = std::min(static_cast<size_t>(options_.max_drifted_ids), drifted.size());
  std::partial_sort(drifted.begin(), drifted.begin() + nd, drifted.end(),
                    [](const std::string* x, const std::string* y) { return *x < *y; });
  for (size_t i = 0; i < nd; ++i) out.drifted_ids.push_back(*drifted[i]);
  out.drifted_ids_truncated = nd < drifted.size();

  // Mean maps from the exact sums.
  if (sums != nullptr && !members.empty()) {
    const int n = options_.map_length;
    const int64_t count = out.items;
    out.mean_baseline.resize(n);
    out.mean_candidate.resize(n);
    out.mean_shift.resize(n);
    for (int i = 0; i < n; ++i) {
      const Fixed a = sums->a[i], b = sums->b[i];
      out.mean_baseline[i] = static_cast<float>(FixedMean(a, count));
      out.mean_candidate[i] = static_cast<float>(FixedMean(b, count));
      // Exact integer difference (both sums < 2^127 below 2^65 items).
      __extension__ const __int128 d = static_cast<__int128>(b) - static_cast<__int128>(a);
      const double shift = static_cast<double>(d) / kFixedScale / static_cast<double>(count);
      out.mean_shift[i] = static_cast<float>(shift) + 0.0f;
    }
  }
  return out;
}

AuditReport AuditAggregator::Finish() const {
  AuditReport report;
  report.map_length = options_.map_length;
  report.grid_h = options_.grid_h;
  report.grid_w = options_.grid_w;
  std::vector<size_t> all(records_.size());
  std::iota(all.begin(), all.end(), size_t{0});
  report.overall = Aggregate("", all, &sums_);

  std::vector<std::vector<size_t>> members(groups_.size());
  for (size_t r = 0; r < records_.size(); ++r)
    if (records_[r].group >= 0) members[records_[r].group].push_back(r);
  std::vector<size_t> order(groups_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t x, size_t y) { return groups_[x].label < groups_[y].label; });
  for (size_t g : order)
    report.groups.push_back(Aggregate(groups_[g].label, members[g], groups_[g].sums.get()));
  return report;
}

AuditState AuditAggregator::ExportState() const {
  AuditState state;
  state.items.reserve(records_.size());
  for (const Record& r : records_) {
    state.items.push_back({*r.id, r.group >= 0 ? groups_[r.group].label : std::string(), r.value});
  }
  std::sort(state.items.begin(), state.items.end(),
            [](const AuditStateItem& x, const AuditStateItem& y) { return x.id < y.id; });
  state.sums.push_back({"", sums_.a, sums_.b});
  std::vector<const GroupState*> groups;
  for (const GroupState& g : groups_)
    if (g.sums != nullptr) groups.push_back(&g);
  std::sort(groups.begin(), groups.end(),
            [](const GroupState* x, const GroupState* y) { return x->label < y->label; });
  for (const GroupState* g : groups) state.sums.push_back({g->label, g->sums->a, g->sums->b});
  return state;
}

absl::Status AuditAggregator::MergeState(const AuditState& state) {
  const int n = options_.map_length;
  // ---- validate everything before changing anything ----
  std::unordered_set<std::string_view> seen;
  std::map<std::string, int64_t> group_items;  // the state's labels -> its items in them
  std::vector<std::array<double, kNumAuditMetrics>> values(state.items.size());
  for (size_t i = 0; i < state.items.size(); ++i) {
    const AuditStateItem& item = state.items[i];
    const std::string where = absl::StrCat("state.items[", i, "]");
    if (item.id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".id: expected a non-empty id, got \"\""));
    }
    if (ids_.count(item.id) != 0 || !seen.insert(item.id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": item id \"", item.id,
          "\" already added (ids must be unique within an audit: is the item in two shards?)"));
    }
    std::array<double, kNumAuditMetrics>& v = values[i];
    for (int m = 0; m < kNumAuditMetrics; ++m) {
      const double x = item.value[m];
      if (std::isinf(x)) {
        return absl::InvalidArgumentError(absl::StrCat(where, " (\"", item.id, "\").values[", m,
                                                       "] (", kMetrics[m].name, "): is ", x,
                                                       ", expected a finite value or NaN (undefined)"));
      }
      v[m] = std::isnan(x) ? kUndefined : x + 0.0;
    }
    const double sa = v[static_cast<int>(AuditMetric::kRegionShareA)];
    const double sb = v[static_cast<int>(AuditMetric::kRegionShareB)];
    double& sd = v[static_cast<int>(AuditMetric::kRegionShareDelta)];
    if (std::isnan(sa) != std::isnan(sb)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " (\"", item.id, "\"): region_share_a and region_share_b: expected both defined or ",
          "both NaN, got only ", std::isnan(sa) ? "region_share_b" : "region_share_a"));
    }
    const double delta = std::isnan(sa) ? kUndefined : (sb - sa) + 0.0;
    if (std::isnan(delta) ? !std::isnan(sd) : sd != delta) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " (\"", item.id, "\").values[13] (region_share_delta): is ", sd,
          ", expected region_share_b - region_share_a = ", delta));
    }
    sd = delta;
    if (!item.group.empty()) ++group_items[item.group];
  }
  int64_t new_groups = 0;
  for (const auto& [label, count] : group_items) new_groups += group_index_.count(label) == 0;
  if (static_cast<int64_t>(groups_.size()) + new_groups > options_.max_groups) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "state: its items bring the audit to ", static_cast<int64_t>(groups_.size()) + new_groups,
        " distinct groups, expected at most max_groups = ", options_.max_groups));
  }
  std::map<std::string, const AuditStateSums*> sums;
  for (size_t j = 0; j < state.sums.size(); ++j) {
    const AuditStateSums& e = state.sums[j];
    const std::string where = absl::StrCat("state.sums[", j, "] (group \"", e.group, "\")");
    int64_t count = static_cast<int64_t>(state.items.size());
    if (!e.group.empty()) {
      const auto it = group_items.find(e.group);
      if (it == group_items.end() || !options_.group_mean_maps) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": expected sums only for the whole audit (\"\")",
            options_.group_mean_maps ? " and the groups of the state's items" : "",
            ", got a group ", options_.group_mean_maps ? "no item of the state is in" : "(group_mean_maps is off)"));
      }
      count = it->second;
    }
    if (!sums.emplace(e.group, &e).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": a second entry for the group"));
    }
    if (static_cast<int64_t>(e.a.size()) != n || static_cast<int64_t>(e.b.size()) != n) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected ", n,
                                                     " cells (the audit's map length) per side, got ",
                                                     e.a.size(), " and ", e.b.size()));
    }
    // Each item adds at most 2^62 to a cell (its normalised value is <= 1).
    const Fixed bound = static_cast<Fixed>(count) << 62;
    for (int i = 0; i < n; ++i) {
      if (e.a[i] > bound || e.b[i] > bound) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": cell ", i, " is above ", count, " * 2^62 (", count,
            " items, each of mass at most 1 in a cell)"));
      }
    }
  }
  if (sums.count("") == 0) {
    return absl::InvalidArgumentError("state.sums: no entry for the whole audit (group \"\")");
  }
  if (options_.group_mean_maps) {
    for (const auto& [label, count] : group_items) {
      if (sums.count(label) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("state.sums: no entry for group \"", label, "\" (", count, " items)"));
      }
    }
  }

  // ---- commit ----
  for (size_t i = 0; i < state.items.size(); ++i) {
    const AuditStateItem& item = state.items[i];
    int32_t group = -1;
    if (!item.group.empty()) {
      auto it = group_index_.find(item.group);
      if (it != group_index_.end()) {
        group = it->second;
      } else {
        group = static_cast<int32_t>(groups_.size());
        GroupState g;
        g.label = item.group;
        if (options_.group_mean_maps) {
          g.sums = std::make_unique<MapSums>();
          g.sums->a.assign(n, 0);
          g.sums->b.assign(n, 0);
        }
        groups_.push_back(std::move(g));
        group_index_.emplace(item.group, group);
      }
    }
    Record record;
    record.value = values[i];
    record.flags = DriftBits(options_.thresholds, record.value, nullptr);
    record.group = group;
    record.id = &*ids_.insert(item.id).first;
    id_bytes_ += static_cast<int64_t>(item.id.size());
    records_.push_back(record);
  }
  for (const auto& [label, e] : sums) {
    MapSums* target = label.empty() ? &sums_ : groups_[group_index_.at(label)].sums.get();
    for (int i = 0; i < n; ++i) {
      target->a[i] += e->a[i];
      target->b[i] += e->b[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace attnroll::analysis
