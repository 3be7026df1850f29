#include "proto/cpp/audit_report_proto.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnroll::v1 {
namespace {

// Each DriftThresholds field, in field order, on both sides.
template <typename F>
void ForEachThreshold(F f) {
  using A = analysis::DriftThresholds;
  using P = DriftThresholds;
  f(&A::min_spearman, &P::has_min_spearman, &P::min_spearman, &P::set_min_spearman);
  f(&A::min_kendall_tau_b, &P::has_min_kendall_tau_b, &P::min_kendall_tau_b,
    &P::set_min_kendall_tau_b);
  f(&A::min_pearson, &P::has_min_pearson, &P::min_pearson, &P::set_min_pearson);
  f(&A::min_cosine, &P::has_min_cosine, &P::min_cosine, &P::set_min_cosine);
  f(&A::min_top_k_iou, &P::has_min_top_k_iou, &P::min_top_k_iou, &P::set_min_top_k_iou);
  f(&A::min_ssim, &P::has_min_ssim, &P::min_ssim, &P::set_min_ssim);
  f(&A::max_l1, &P::has_max_l1, &P::max_l1, &P::set_max_l1);
  f(&A::max_l2, &P::has_max_l2, &P::max_l2, &P::set_max_l2);
  f(&A::max_js_divergence, &P::has_max_js_divergence, &P::max_js_divergence,
    &P::set_max_js_divergence);
  f(&A::max_emd, &P::has_max_emd, &P::max_emd, &P::set_max_emd);
  f(&A::max_com_shift, &P::has_max_com_shift, &P::max_com_shift, &P::set_max_com_shift);
  f(&A::max_region_share_drop, &P::has_max_region_share_drop, &P::max_region_share_drop,
    &P::set_max_region_share_drop);
}

void MapTensor(const std::vector<float>& values, int grid_h, int grid_w, Tensor* t) {
  t->set_dtype(DTYPE_FP32);
  if (grid_h > 0) {
    t->add_shape(grid_h);
    t->add_shape(grid_w);
  } else {
    t->add_shape(static_cast<int64_t>(values.size()));
  }
  t->mutable_data()->assign(reinterpret_cast<const char*>(values.data()),
                            values.size() * sizeof(float));
}

void ToAggregateProto(const analysis::AuditAggregate& a, int grid_h, int grid_w,
                      AuditAggregate* out) {
  out->set_group(a.group);
  out->set_items(a.items);
  for (const analysis::MetricSummary& m : a.metrics) {
    MetricSummary* s = out->add_metrics();
    s->set_metric(m.metric);
    s->set_count(m.count);
    s->set_undefined(m.undefined);
    s->set_mean(m.mean);
    s->set_median(m.median);
    s->set_p10(m.p10);
    s->set_p90(m.p90);
    s->set_min(m.min);
    s->set_max(m.max);
    for (const analysis::WorstItem& w : m.worst) {
      WorstItem* wi = s->add_worst();
      wi->set_id(w.id);
      wi->set_value(w.value);
    }
  }
  RegionSummary* r = out->mutable_region();
  r->set_items(a.region.items);
  r->set_mean_share_baseline(a.region.mean_share_a);
  r->set_mean_share_candidate(a.region.mean_share_b);
  r->set_mean_delta(a.region.mean_delta);
  r->set_dropped(a.region.dropped);
  r->set_increased(a.region.increased);
  r->set_unchanged(a.region.unchanged);
  if (!a.mean_baseline.empty()) {
    MapTensor(a.mean_baseline, grid_h, grid_w, out->mutable_mean_baseline());
    MapTensor(a.mean_candidate, grid_h, grid_w, out->mutable_mean_candidate());
    MapTensor(a.mean_shift, grid_h, grid_w, out->mutable_mean_shift());
  }
  out->set_drifted(a.drifted);
  for (const auto& [flag, count] : a.flag_counts) (*out->mutable_flag_counts())[flag] = count;
  for (const std::string& id : a.drifted_ids) out->add_drifted_ids(id);
  out->set_drifted_ids_truncated(a.drifted_ids_truncated);
}

// 16 bytes per cell, little-endian.
std::string FixedBytes(const std::vector<analysis::AuditFixed>& cells) {
  std::string out(cells.size() * 16, '\0');
  for (size_t i = 0; i < cells.size(); ++i) {
    analysis::AuditFixed v = cells[i];
    for (int b = 0; b < 16; ++b, v >>= 8) out[i * 16 + b] = static_cast<char>(v & 0xff);
  }
  return out;
}

absl::Status ReadFixed(const std::string& bytes, uint32_t n, const std::string& field,
                       std::vector<analysis::AuditFixed>* out) {
  if (bytes.size() != uint64_t{n} * 16) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected ", uint64_t{n} * 16,
                                                   " bytes (16 per cell of ", n, "), got ",
                                                   bytes.size()));
  }
  out->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    analysis::AuditFixed v = 0;
    for (int b = 15; b >= 0; --b) {
      v = (v << 8) | static_cast<unsigned char>(bytes[i * 16 + b]);
    }
    (*out)[i] = v;
  }
  return absl::OkStatus();
}

}  // namespace

analysis::DriftThresholds ToDriftThresholds(const DriftThresholds& t) {
  analysis::DriftThresholds out;
  ForEachThreshold([&](auto field, auto has, auto get, auto) {
    if ((t.*has)()) out.*field = (t.*get)();
  });
  return out;
}

DriftThresholds FromDriftThresholds(const analysis::DriftThresholds& t) {
  DriftThresholds out;
  ForEachThreshold([&](auto field, auto, auto, auto set) {
    if ((t.*field).has_value()) (out.*set)(*(t.*field));
  });
  return out;
}

void ToReportProto(const analysis::AuditReport& report, AuditReport* out) {
  out->set_grid_height(report.grid_h);
  out->set_grid_width(report.grid_w);
  ToAggregateProto(report.overall, report.grid_h, report.grid_w, out->mutable_overall());
  for (const analysis::AuditAggregate& g : report.groups) {
    ToAggregateProto(g, report.grid_h, report.grid_w, out->add_groups());
  }
}

void ToStateProto(const analysis::AuditState& state, const analysis::AuditOptions& options,
                  AuditState* out) {
  out->set_map_length(options.map_length);
  out->set_grid_height(options.grid_h);
  out->set_grid_width(options.grid_w);
  *out->mutable_thresholds() = FromDriftThresholds(options.thresholds);
  out->set_worst_items(options.worst_items);
  out->set_max_drifted_ids(options.max_drifted_ids);
  out->set_max_groups(options.max_groups);
  out->set_group_mean_maps(options.group_mean_maps);
  for (const analysis::AuditStateItem& item : state.items) {
    AuditStateItem* i = out->add_items();
    i->set_id(item.id);
    i->set_group(item.group);
    for (double v : item.value) i->add_values(v);
  }
  for (const analysis::AuditStateSums& s : state.sums) {
    AuditStateSums* e = out->add_sums();
    e->set_group(s.group);
    e->set_baseline(FixedBytes(s.a));
    e->set_candidate(FixedBytes(s.b));
  }
}

analysis::AuditOptions StateOptions(const AuditState& state) {
  analysis::AuditOptions o;
  o.map_length = static_cast<int>(std::min<uint32_t>(state.map_length(), 1u << 30));
  o.grid_h = static_cast<int>(std::min<uint32_t>(state.grid_height(), 1u << 30));
  o.grid_w = static_cast<int>(std::min<uint32_t>(state.grid_width(), 1u << 30));
  o.thresholds = ToDriftThresholds(state.thresholds());
  o.worst_items = static_cast<int>(std::min<uint32_t>(state.worst_items(), 1u << 30));
  o.max_drifted_ids = static_cast<int>(std::min<uint32_t>(state.max_drifted_ids(), 1u << 30));
  o.max_groups = static_cast<int>(std::min<uint32_t>(state.max_groups(), 1u << 30));
  o.group_mean_maps = state.group_mean_maps();
  return o;
}

absl::StatusOr<analysis::AuditState> FromStateProto(const AuditState& state) {
  analysis::AuditState out;
  if (state.sums_size() == 0) {
    return absl::InvalidArgumentError(
        "state.sums: expected at least the whole audit's entry (group \"\"), got none");
  }
  out.items.reserve(state.items_size());
  for (int i = 0; i < state.items_size(); ++i) {
    const AuditStateItem& item = state.items(i);
    if (item.values_size() != analysis::kNumAuditMetrics) {
      return absl::InvalidArgumentError(absl::StrCat(
          "state.items[", i, "].values: expected ", analysis::kNumAuditMetrics,
          " values (one per metric), got ", item.values_size()));
    }
    analysis::AuditStateItem a;
    a.id = item.id();
    a.group = item.group();
    for (int m = 0; m < analysis::kNumAuditMetrics; ++m) a.value[m] = item.values(m);
    out.items.push_back(std::move(a));
  }
  for (int j = 0; j < state.sums_size(); ++j) {
    const AuditStateSums& e = state.sums(j);
    analysis::AuditStateSums s;
    s.group = e.group();
    const std::string where = absl::StrCat("state.sums[", j, "]");
    if (absl::Status st = ReadFixed(e.baseline(), state.map_length(), where + ".baseline", &s.a);
        !st.ok()) {
      return st;
    }
    if (absl::Status st = ReadFixed(e.candidate(), state.map_length(), where + ".candidate", &s.b);
        !st.ok()) {
      return st;
    }
    out.sums.push_back(std::move(s));
  }
  return out;
}

}  // namespace attnroll::v1
