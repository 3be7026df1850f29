#include "server/session/audit_session.h"

#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/session/attention_decode.h"
#include "server/session/compare_request.h"
#include "server/session/result_tensors.h"
#include "server/session/field_status.h"
#include "proto/cpp/audit_report_proto.h"
#include "server/runtime/refusal.h"

namespace attnroll::session {

absl::StatusOr<std::unique_ptr<AuditSession>> AuditSession::Create(const v1::AuditHeader& header,
                                                                   const runtime::PassLimits& limits) {
  const v1::CompareOptions& o = header.compare();
  int64_t length = header.map_length();
  if (length == 0) length = int64_t{o.grid_height()} * o.grid_width();
  if (length <= 0) {
    return absl::InvalidArgumentError(
        "header.map_length: expected the map length, or a grid in header.compare, got neither");
  }
  if (length > int64_t{limits.max_tokens} * limits.max_tokens) {
    return runtime::Refused(runtime::Refusal::kLimits, absl::StrCat(
        "header.map_length: ", length, " exceeds the server limit of max_tokens^2"));
  }
  absl::StatusOr<analysis::CompareSpec> spec = ToCompareSpec(o, length);
  if (!spec.ok()) return InField("header.compare", spec.status());
  if (absl::Status s = CheckCompareCost(1, length, *spec, limits); !s.ok()) return At("header", s);
  analysis::AuditOptions options;
  options.map_length = static_cast<int>(length);
  options.grid_h = spec->grid_h;
  options.grid_w = spec->grid_w;
  options.thresholds = v1::ToDriftThresholds(header.thresholds());
  if (header.worst_items() != 0) options.worst_items = static_cast<int>(std::min<uint32_t>(header.worst_items(), 1000));
  absl::StatusOr<analysis::AuditAggregator> aggregator = analysis::AuditAggregator::Create(options);
  if (!aggregator.ok()) {
    return At("header", aggregator.status());
  }
  return std::unique_ptr<AuditSession>(new AuditSession(
      *std::move(spec), *std::move(aggregator), length, header.mergeable(), limits.max_response_bytes));
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

absl::StatusOr<v1::AuditReport> AuditSession::Report() const {
  analysis::AuditReport report;
  analysis::AuditState state;
  {
    absl::MutexLock lock(&mu_);
    report = aggregator_.Finish();
    if (mergeable_) state = aggregator_.ExportState();
  }
  v1::AuditReport out;
  v1::ToReportProto(report, &out);
  if (mergeable_) {
    v1::ToStateProto(state, aggregator_.options(), out.mutable_state());
    const int64_t bytes = static_cast<int64_t>(out.ByteSizeLong());
    if (bytes > max_response_bytes_) {
      return runtime::Refused(runtime::Refusal::kLimits, absl::StrCat(
          "report: the report with its mergeable state (header.mergeable) is ", bytes,
          " bytes, over the server's max_response_bytes of ", max_response_bytes_,
          "; audit fewer items per call (shards) or leave mergeable unset"));
    }
  }
  return out;
}

}  // namespace attnroll::session
