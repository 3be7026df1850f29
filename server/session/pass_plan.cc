#include "server/session/pass_plan.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/analysis/attention_flow.h"
#include "server/analysis/row_stats.h"
#include "proto/cpp/client_fusion.h"
#include "server/session/analysis_options.h"
#include "server/session/field_status.h"
#include "server/session/pass_checks.h"
#include "server/session/pass_session.h"
#include "server/runtime/refusal.h"

namespace attnroll::session {
namespace {

absl::Status PlanLayout(const v1::Layout& layout, const runtime::PassLimits& limits, PassPlan* plan) {
  const uint32_t batch = layout.batch_size() == 0 ? 1 : layout.batch_size();
  for (absl::Status s : {CheckCount("layout.num_layers", layout.num_layers(), limits.max_layers),
                         CheckCount("layout.num_heads", layout.num_heads(), limits.max_heads),
                         CheckCount("layout.num_tokens", layout.num_tokens(), limits.max_tokens),
                         CheckCount("layout.batch_size", batch, limits.max_batch)}) {
    if (!s.ok()) return s;
  }
  const uint64_t n = layout.num_tokens();
  if (absl::Status s = CheckPassFits(
          uint64_t{batch} * layout.num_layers() * layout.num_heads() * n * n, limits.max_pass_bytes,
          absl::StrCat(batch, " x ", layout.num_layers(), " x ", layout.num_heads(), " x ", n, " x ", n));
      !s.ok()) {
    return s;
  }
  plan->num_layers = static_cast<int>(layout.num_layers());
  plan->num_heads = static_cast<int>(layout.num_heads());
  plan->num_tokens = static_cast<int>(n);
  plan->batch = static_cast<int>(batch);
  plan->causal = layout.causal();
  plan->max_pass_bytes = limits.max_pass_bytes;

  if (layout.valid_lengths_size() != 0 && layout.valid_lengths_size() != static_cast<int>(batch)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout.valid_lengths: expected ", batch, " lengths (one per sequence) or none, got ",
        layout.valid_lengths_size()));
  }
  for (uint32_t b = 0; b < batch; ++b) {
    const uint32_t m = layout.valid_lengths_size() == 0 ? n : layout.valid_lengths(b);
    if (m < 1 || m > n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layout.valid_lengths[", b, "]: expected 1 <= length <= num_tokens = ", n, ", got ", m));
    }
    plan->valid.push_back(static_cast<int>(m));
  }
  const int min_valid = *std::min_element(plan->valid.begin(), plan->valid.end());
  if (layout.prefix_tokens() >= static_cast<uint32_t>(min_valid)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout.prefix_tokens: expected P < the shortest valid length ", min_valid, ", got ",
        layout.prefix_tokens()));
  }
  if (layout.grid().height() > n || layout.grid().width() > n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout.grid: ", layout.grid().height(), "x", layout.grid().width(),
        " cannot fit num_tokens = ", n));
  }
  return absl::OkStatus();
}

// Analysis `index`: its spec and path, validated for every sequence, and what
// it adds to the pass's memory and flow cost. Errors name "analyses[index]".
absl::Status PlanAnalysis(const v1::Analysis& a, size_t index, const v1::Layout& layout, int threads,
                          int max_rows, PassPlan* plan) {
  const std::string path = absl::StrCat("analyses[", index, "]");
  if (a.kind_case() == v1::Analysis::kValidate) {
    AnalysisPlan job;
    job.name = a.name();
    job.validate_only = true;
    plan->analyses.push_back(std::move(job));
    return absl::OkStatus();
  }
  absl::StatusOr<analysis::RolloutSpec> spec;
  const char* root = "rollout";
  switch (a.kind_case()) {
    case v1::Analysis::kRollout: spec = ToRolloutSpec(a.rollout(), layout, "rollout", max_rows); break;
    case v1::Analysis::kFlow:
      spec = ToFlowGraphSpec(a.flow(), layout, max_rows);
      root = "flow";
      break;
    default:
      return At(path, absl::InvalidArgumentError(
                          a.kind_case() == v1::Analysis::kEncoderDecoder
                              ? "an encoder_decoder analysis needs Layout.encoder_decoder"
                              : "expected one analysis kind (rollout, flow or validate), got none"));
  }
  if (!spec.ok()) return InField(path, spec.status());
  AnalysisPlan job{a.name(), *spec, analysis::ChooseRolloutPath(*spec, plan->num_layers, plan->num_tokens)};
  if (a.kind_case() == v1::Analysis::kRollout) job.fail_on_degenerate = a.rollout().fail_on_degenerate();
  if (a.kind_case() == v1::Analysis::kFlow) {
    job.flow = true;
    job.all_rows = a.flow().all_rows();
    job.raw = a.flow().raw();
    job.path = analysis::RolloutPath::kRow;  // keeps every At_l for the max flows
  }
  if (spec->gradient != analysis::GradientRule::kNone) plan->needs_gradient = true;
  const int layers = analysis::LastLayer(*spec, plan->num_layers) - spec->first_layer + 1;
  for (int b = 0; b < plan->batch; ++b) {
    const int m = plan->valid[b];
    // The maps of this sequence: k rows (every token for flow's all_rows), per
    // layer in range, per head (and their aggregate) when head-specific.
    const int64_t rows = job.all_rows ? m : analysis::NumMaps(spec->readout);
    const int64_t layers_out = spec->per_layer ? layers : 1;
    const int64_t heads_out = spec->fusion == analysis::Fusion::kNone ? plan->num_heads + 1 : 1;
    plan->response_bytes += rows * layers_out * heads_out * (m - spec->readout.prefix) *
                            static_cast<int64_t>(sizeof(float));
    if (absl::Status s = analysis::ValidateRolloutSpec(*spec, plan->num_layers, plan->num_heads, m, root);
        !s.ok()) {
      return At(absl::StrCat(path, " (sequence ", b, ")"), s);
    }
    plan->working_bytes +=
        analysis::RolloutWorkingBytes(*spec, plan->num_layers, plan->num_heads, m, job.path);
    if (job.flow) {
      const int sinks = job.all_rows ? m : analysis::NumMaps(spec->readout);
      plan->flow_cost += analysis::EstimateFlowCost(layers, m, sinks);
      // Each thread's solver scratch, and the flows (double) of the sinks.
      plan->working_bytes +=
          threads * analysis::AttentionFlow::WorkingBytes(layers, m, sinks > 1) +
          static_cast<int64_t>(sinks) * m * static_cast<int64_t>(sizeof(double) + sizeof(float));
    }
  }
  plan->analyses.push_back(std::move(job));
  return absl::OkStatus();
}

// A pass whose heads the client fused: checked against the rule every client
// follows, then rewritten into the pass the server runs, one head per layer
// (mean fusion of one head is that head; weighted fusion gets the one weight
// sum_h w_h, which undoes the client's normalisation).
absl::Status ToFusedPass(const v1::PassHeader& header, const runtime::PassLimits& limits,
                         v1::Layout* layout, std::vector<v1::Analysis>* analyses) {
  if (absl::Status s = CheckCount("layout.num_heads", header.layout().num_heads(), limits.max_heads);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<float>> weights = v1::ClientFusionWeights(header);
  if (!weights.ok()) return weights.status();
  double sum = 0;
  for (float w : *weights) sum += w;
  layout->set_num_heads(1);
  for (v1::Analysis& a : *analyses) {
    auto one_weight = [&](auto* options) {
      if (options->fusion() != v1::HEAD_FUSION_WEIGHTED) return;
      options->clear_head_weights();
      options->add_head_weights(static_cast<float>(sum));
    };
    if (a.has_rollout()) one_weight(a.mutable_rollout());
    if (a.has_flow()) one_weight(a.mutable_flow());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PassPlan> PlanPass(const v1::PassHeader& header, const runtime::PassLimits& limits,
                                  int threads) {
  if (!header.has_layout()) {
    return absl::InvalidArgumentError("header.layout: expected a layout, got none");
  }
  if (header.analyses_size() > limits.max_analyses) {
    return runtime::Refused(runtime::Refusal::kLimits,
                            absl::StrCat("analyses: ", header.analyses_size(),
                                         " analyses in one pass, over the server's max_analyses of ",
                                         limits.max_analyses));
  }
  v1::Layout layout = header.layout();
  // One default rollout when no analysis is asked for.
  std::vector<v1::Analysis> analyses(header.analyses().begin(), header.analyses().end());
  if (analyses.empty()) analyses.emplace_back().mutable_rollout();
  PassPlan plan;
  plan.request_id = header.request_id();
  plan.heads_fused_by_client = layout.heads_fused_by_client();
  if (plan.heads_fused_by_client) {
    if (absl::Status s = ToFusedPass(header, limits, &layout, &analyses); !s.ok()) return s;
  }
  if (absl::Status s = PlanLayout(layout, limits, &plan); !s.ok()) return s;
  absl::StatusOr<float> tolerance = RowSumTolerance(header);
  if (!tolerance.ok()) return tolerance.status();
  plan.tolerance = *tolerance;

  plan.working_bytes = PassSession::ScratchBytes(plan);
  for (size_t i = 0; i < analyses.size(); ++i) {
    if (absl::Status s = PlanAnalysis(analyses[i], i, layout, threads, limits.max_rows, &plan); !s.ok()) {
      return s;
    }
  }
  if (plan.response_bytes > limits.max_response_bytes) {
    return runtime::Refused(runtime::Refusal::kLimits,
                            absl::StrCat("response: the maps asked for are ", plan.response_bytes,
                                         " bytes, over the server's max_response_bytes of ",
                                         limits.max_response_bytes,
                                         "; ask for fewer rows, layers or analyses"));
  }
  // The response is built from a copy of every map.
  plan.working_bytes += plan.response_bytes;
  if (plan.flow_cost > limits.max_flow_cost) {
    return runtime::Refused(runtime::Refusal::kLimits, absl::StrFormat(
        "flow: the pass's attention flow is estimated at %.3g work units (~%.3g core-seconds), over "
        "the server's max_flow_cost of %.3g; ask for fewer output tokens or layers",
        plan.flow_cost, plan.flow_cost * 1e-9, limits.max_flow_cost));
  }
  return plan;
}

}  // namespace attnroll::session
