#include "server/session/audit_session.h"

#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/session/attention_decode.h"
#include "server/session/compare_request.h"
#include "server/session/result_tensors.h"
#include "server/session/field_status.h"
#include "server/runtime/refusal.h"

namespace attnroll::session {
namespace {

analysis::DriftThresholds ToThresholds(const v1::DriftThresholds& t) {
  analysis::DriftThresholds out;
  auto take = [](bool has, double v, std::optional<double>* o) {
    if (has) *o = v;
  };
  take(t.has_min_spearman(), t.min_spearman(), &out.min_spearman);
  take(t.has_min_kendall_tau_b(), t.min_kendall_tau_b(), &out.min_kendall_tau_b);
  take(t.has_min_pearson(), t.min_pearson(), &out.min_pearson);
  take(t.has_min_cosine(), t.min_cosine(), &out.min_cosine);
  take(t.has_min_top_k_iou(), t.min_top_k_iou(), &out.min_top_k_iou);
  take(t.has_min_ssim(), t.min_ssim(), &out.min_ssim);
  take(t.has_max_l1(), t.max_l1(), &out.max_l1);
  take(t.has_max_l2(), t.max_l2(), &out.max_l2);
  take(t.has_max_js_divergence(), t.max_js_divergence(), &out.max_js_divergence);
  take(t.has_max_emd(), t.max_emd(), &out.max_emd);
  take(t.has_max_com_shift(), t.max_com_shift(), &out.max_com_shift);
  take(t.has_max_region_share_drop(), t.max_region_share_drop(), &out.max_region_share_drop);
  return out;
}

v1::Tensor MapTensor(const std::vector<float>& values, int grid_h, int grid_w) {
  v1::Tensor t;
  FloatTensor(values.data(), values.size(),
              grid_h > 0 ? std::vector<int64_t>{grid_h, grid_w}
                         : std::vector<int64_t>{static_cast<int64_t>(values.size())},
              &t);
  return t;
}

void ToProto(const analysis::AuditAggregate& a, int grid_h, int grid_w, v1::AuditAggregate* out) {
  out->set_group(a.group);
  out->set_items(a.items);
  for (const analysis::MetricSummary& m : a.metrics) {
    v1::MetricSummary* s = out->add_metrics();
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
      v1::WorstItem* wi = s->add_worst();
      wi->set_id(w.id);
      wi->set_value(w.value);
    }
  }
  v1::RegionSummary* r = out->mutable_region();
  r->set_items(a.region.items);
  r->set_mean_share_baseline(a.region.mean_share_a);
  r->set_mean_share_candidate(a.region.mean_share_b);
  r->set_mean_delta(a.region.mean_delta);
  r->set_dropped(a.region.dropped);
  r->set_increased(a.region.increased);
  r->set_unchanged(a.region.unchanged);
  if (!a.mean_baseline.empty()) {
    *out->mutable_mean_baseline() = MapTensor(a.mean_baseline, grid_h, grid_w);
    *out->mutable_mean_candidate() = MapTensor(a.mean_candidate, grid_h, grid_w);
    *out->mutable_mean_shift() = MapTensor(a.mean_shift, grid_h, grid_w);
  }
  out->set_drifted(a.drifted);
  for (const auto& [flag, count] : a.flag_counts) (*out->mutable_flag_counts())[flag] = count;
  for (const std::string& id : a.drifted_ids) out->add_drifted_ids(id);
  out->set_drifted_ids_truncated(a.drifted_ids_truncated);
}

}  // namespace

absl::StatusOr<std::unique_ptr<AuditSession>> AuditSession::Create(const v1::AuditHeader& header,
                                                                   const runtime::PassLimits& limits) {
  const v1::CompareOptions& o = header.compare();
  const uint64_t max_length = uint64_t{static_cast<uint32_t>(limits.max_tokens)} * limits.max_tokens;
  // Both sides of a grid are below 2^32: their product fits in 64 unsigned bits.
  const uint64_t cells = uint64_t{o.grid_height()} * o.grid_width();
  if (header.map_length() == 0 && cells == 0) {
    return absl::InvalidArgumentError(
        "header.map_length: expected the map length, or a grid in header.compare, got neither");
  }
  if (header.map_length() > max_length) {
    return runtime::Refused(runtime::Refusal::kLimits, absl::StrCat(
        "header.map_length: ", header.map_length(), " exceeds the server limit of max_tokens^2"));
  }
  if (header.map_length() == 0 && cells > max_length) {
    return runtime::Refused(runtime::Refusal::kLimits, absl::StrCat(
        "header.compare.grid: ", o.grid_height(), "x", o.grid_width(), " = ", cells,
        " cells exceed the server limit of max_tokens^2 = ", max_length));
  }
  const int64_t length = header.map_length() != 0 ? int64_t{header.map_length()} : static_cast<int64_t>(cells);
  absl::StatusOr<analysis::CompareSpec> spec = ToCompareSpec(o, length);
  if (!spec.ok()) return InField("header.compare", spec.status());
  if (absl::Status s = CheckCompareCost(1, length, *spec, limits); !s.ok()) return At("header", s);
  analysis::AuditOptions options;
  options.map_length = static_cast<int>(length);
  options.grid_h = spec->grid_h;
  options.grid_w = spec->grid_w;
  options.thresholds = ToThresholds(header.thresholds());
  if (header.worst_items() != 0) options.worst_items = static_cast<int>(std::min<uint32_t>(header.worst_items(), 1000));
  absl::StatusOr<analysis::AuditAggregator> aggregator = analysis::AuditAggregator::Create(options);
  if (!aggregator.ok()) {
    return At("header", aggregator.status());
  }
  return std::unique_ptr<AuditSession>(
      new AuditSession(*std::move(spec), *std::move(aggregator), length));
}

int64_t AuditSession::working_bytes(int workers) const {
  absl::MutexLock lock(&mu_);
  return analysis::AuditAggregator::MapBytesBound(aggregator_.options()) +
         workers * (analysis::CompareWorkingBytes(length_, spec_) +
                    4 * length_ * static_cast<int64_t>(sizeof(float)));
}

v1::AuditItemResult AuditSession::FailedItem(const std::string& id, const absl::Status& status) {
  v1::AuditItemResult result;
  result.set_id(id);
  *result.mutable_error() = ToPassError(At(absl::StrCat("item \"", id, "\""), status));
  return result;
}

v1::AuditItemResult AuditSession::AddItem(const v1::AuditItem& item,
                                          const std::function<bool()>& cancelled) {
  for (const auto& [name, t] : {std::pair<const char*, const v1::Tensor*>{"baseline", &item.baseline()},
                                {"candidate", &item.candidate()}}) {
    if (absl::Status s = CheckTensorBytes(*t, name); !s.ok()) return FailedItem(item.id(), s);
    if (static_cast<int64_t>(t->data().size() / DTypeSize(t->dtype())) != length_) {
      return FailedItem(item.id(), absl::InvalidArgumentError(absl::StrCat(
                                       name, ": expected ", length_, " values (the audit's map length), got ",
                                       t->data().size() / DTypeSize(t->dtype()))));
    }
  }
  const std::vector<float> a = DecodeAllValues(item.baseline());
  const std::vector<float> b = DecodeAllValues(item.candidate());
  absl::StatusOr<analysis::Comparison> c = analysis::CompareMaps(a, b, spec_, cancelled);
  if (!c.ok()) return FailedItem(item.id(), c.status());
  analysis::AuditItemView view;
  view.id = item.id();
  view.group = item.group();
  view.comparison = &*c;
  view.baseline = a;
  view.candidate = b;
  absl::StatusOr<std::vector<std::string>> flags;
  {
    absl::MutexLock lock(&mu_);
    flags = aggregator_.Add(view);
  }
  v1::AuditItemResult result;
  result.set_id(item.id());
  if (!flags.ok()) {
    // The aggregator's messages name the item themselves.
    *result.mutable_error() = ToPassError(flags.status());
    return result;
  }
  for (const std::string& f : *flags) result.add_drift_flags(f);
  ToProto(*c, {}, /*with_difference=*/false, result.mutable_comparison());
  return result;
}

v1::AuditItemResult AuditSession::AddPassItem(const std::string& id, const std::string& group,
                                              Pass& baseline, Pass& candidate,
                                              const FinishContext& finish) {
  v1::AuditItem item;
  item.set_id(id);
  item.set_group(group);
  std::vector<std::string> warnings;
  for (const auto& [name, pass, out] :
       {std::tuple<const char*, Pass*, v1::Tensor*>{"baseline", &baseline, item.mutable_baseline()},
        {"candidate", &candidate, item.mutable_candidate()}}) {
    absl::StatusOr<v1::ExplainResponse> r = pass->Finish(finish);
    if (!r.ok() || r->results_size() == 0 || r->results(0).maps_size() == 0) {
      return FailedItem(id, Whose(name, r.ok() ? absl::InvalidArgumentError("pass produced no map")
                                               : r.status()));
    }
    for (const std::string& w : r->results(0).warnings()) warnings.push_back(absl::StrCat(name, ": ", w));
    *out = std::move(*r->mutable_results(0)->mutable_maps(0));
  }
  v1::AuditItemResult result = AddItem(item, finish.cancelled);
  for (std::string& w : warnings) result.add_warnings(std::move(w));
  return result;
}

v1::AuditReport AuditSession::Report() const {
  analysis::AuditReport report;
  {
    absl::MutexLock lock(&mu_);
    report = aggregator_.Finish();
  }
  v1::AuditReport out;
  out.set_grid_height(report.grid_h);
  out.set_grid_width(report.grid_w);
  ToProto(report.overall, report.grid_h, report.grid_w, out.mutable_overall());
  for (const analysis::AuditAggregate& g : report.groups) {
    ToProto(g, report.grid_h, report.grid_w, out.add_groups());
  }
  return out;
}

}  // namespace attnroll::session
