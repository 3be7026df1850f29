#include "server/session/encoder_decoder_plan.h"

#include <algorithm>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "server/analysis/row_stats.h"
#include "server/session/analysis_options.h"
#include "server/session/field_status.h"
#include "server/runtime/refusal.h"
#include "server/session/pass_checks.h"

namespace attnroll::session {
namespace {

absl::StatusOr<EncoderDecoderAnalysisPlan> PlanAnalysis(const v1::Analysis& a,
                                                        const v1::Layout& layout,
                                                        const EncoderDecoderPlan& plan) {
  if (a.kind_case() != v1::Analysis::kEncoderDecoder) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected an encoder_decoder analysis (an encoder-decoder pass takes no other), got ",
        a.has_rollout() ? "rollout" : a.has_flow() ? "flow" : a.has_validate() ? "validate" : "none"));
  }
  const v1::EncoderDecoderOptions& o = a.encoder_decoder();
  // Fusion, residual and the read-out are converted as for rollout.
  v1::RolloutOptions as_rollout;
  as_rollout.set_fusion(o.fusion());
  *as_rollout.mutable_head_weights() = o.head_weights();
  if (o.has_residual()) as_rollout.set_residual(o.residual());
  as_rollout.set_no_renormalize(o.no_renormalize());
  *as_rollout.mutable_readout() = o.readout();
  v1::Layout enc_layout = layout;  // rows index decoder tokens; maps run over encoder tokens
  enc_layout.set_num_tokens(std::max(plan.n_enc, plan.n_dec));
  absl::StatusOr<analysis::RolloutSpec> rs = ToRolloutSpec(as_rollout, enc_layout, "encoder_decoder");
  if (!rs.ok()) return rs.status();
  if (o.composition() != v1::COMPOSITION_RULES && o.composition() != v1::COMPOSITION_ROLLOUT) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encoder_decoder.composition: expected RULES or ROLLOUT, got ",
        static_cast<int>(o.composition())));
  }
  EncoderDecoderAnalysisPlan job;
  job.name = a.name();
  job.spec.rules = o.composition() == v1::COMPOSITION_RULES;
  job.spec.fusion = rs->fusion;
  job.spec.head_weights = rs->head_weights;
  job.spec.residual = rs->residual;
  job.spec.renormalize = rs->renormalize;
  job.readout = rs->readout;
  job.all_rows = job.readout.rows.empty() && !job.readout.mean_of_rows && !job.readout.last_row;
  job.spec.causal = plan.causal;
  if (absl::Status s = analysis::ValidateEncoderDecoderSpec(job.spec, plan.num_heads); !s.ok()) {
    return s;
  }
  // Rows index each sequence's decoder tokens; the maps run over its encoder tokens.
  for (int b = 0; b < plan.batch; ++b) {
    const std::string seq = plan.batch > 1 ? absl::StrCat(" of sequence ", b) : "";
    for (int r : job.readout.rows) {
      if (r >= plan.valid_dec[b]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "encoder_decoder.readout.rows: row ", r, " out of range, expected 0 <= row < the ",
            plan.valid_dec[b], " decoder tokens", seq));
      }
    }
    analysis::ReadoutSpec axis = job.readout;
    axis.rows.clear();
    if (absl::Status s = analysis::ValidateReadout(axis, plan.valid_enc[b]); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(s.message(), " (on the encoder tokens", seq, ")"));
    }
  }
  job.return_encoder = o.return_encoder();
  job.return_decoder = o.return_decoder();
  return job;
}

}  // namespace

absl::StatusOr<EncoderDecoderPlan> PlanEncoderDecoderPass(const v1::PassHeader& header,
                                                          const runtime::PassLimits& limits) {
  const v1::Layout& layout = header.layout();
  const v1::EncoderDecoder& ed = layout.encoder_decoder();
  if (layout.heads_fused_by_client()) {
    return absl::InvalidArgumentError(
        "layout.heads_fused_by_client: not supported with layout.encoder_decoder (send the heads)");
  }
  if (layout.num_layers() != 0 || layout.num_tokens() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout: num_layers and num_tokens must be 0 with encoder_decoder (its stacks give them), "
        "got ", layout.num_layers(), " and ", layout.num_tokens()));
  }
  if (layout.valid_lengths_size() != 0) {
    return absl::InvalidArgumentError(
        "layout.valid_lengths: expected none with encoder_decoder (its encoder_valid_lengths and "
        "decoder_valid_lengths give each side's), got " + std::to_string(layout.valid_lengths_size()));
  }
  const uint32_t batch = layout.batch_size() == 0 ? 1 : layout.batch_size();
  for (absl::Status s : {CheckCount("layout.num_heads", layout.num_heads(), limits.max_heads),
                         CheckCount("layout.batch_size", batch, limits.max_batch),
                         CheckCount("layout.encoder_decoder.encoder_layers", ed.encoder_layers(), limits.max_layers),
                         CheckCount("layout.encoder_decoder.decoder_layers", ed.decoder_layers(), limits.max_layers),
                         CheckCount("layout.encoder_decoder.encoder_tokens", ed.encoder_tokens(), limits.max_tokens),
                         CheckCount("layout.encoder_decoder.decoder_tokens", ed.decoder_tokens(), limits.max_tokens)}) {
    if (!s.ok()) return s;
  }
  EncoderDecoderPlan p;
  p.request_id = header.request_id();
  p.num_heads = static_cast<int>(layout.num_heads());
  p.batch = static_cast<int>(batch);
  p.encoder_layers = static_cast<int>(ed.encoder_layers());
  p.decoder_layers = static_cast<int>(ed.decoder_layers());
  p.n_enc = static_cast<int>(ed.encoder_tokens());
  p.n_dec = static_cast<int>(ed.decoder_tokens());
  p.causal = layout.causal();
  p.max_pass_bytes = limits.max_pass_bytes;
  for (const auto& [field, lengths, n, out] :
       {std::tuple<const char*, const google::protobuf::RepeatedField<uint32_t>*, int, std::vector<int>*>{
            "layout.encoder_decoder.encoder_valid_lengths", &ed.encoder_valid_lengths(), p.n_enc, &p.valid_enc},
        {"layout.encoder_decoder.decoder_valid_lengths", &ed.decoder_valid_lengths(), p.n_dec, &p.valid_dec}}) {
    if (!lengths->empty() && lengths->size() != p.batch) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": expected ", p.batch,
                                                     " lengths (one per sequence) or none, got ",
                                                     lengths->size()));
    }
    for (int b = 0; b < p.batch; ++b) {
      const int64_t m = lengths->empty() ? n : (*lengths)[b];
      if (m < 1 || m > n) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, "[", b, "]: expected 1 <= length <= ", n, ", got ", m));
      }
      out->push_back(static_cast<int>(m));
    }
  }
  const uint64_t e = uint64_t{ed.encoder_tokens()} * ed.encoder_tokens();
  const uint64_t d = uint64_t{ed.decoder_tokens()} * ed.decoder_tokens();
  const uint64_t x = uint64_t{ed.decoder_tokens()} * ed.encoder_tokens();
  if (absl::Status s = CheckPassFits(
          uint64_t{batch} * layout.num_heads() * (ed.encoder_layers() * e + ed.decoder_layers() * (d + x)),
          limits.max_pass_bytes, "the encoder-decoder stacks'");
      !s.ok()) {
    return s;
  }
  absl::StatusOr<float> tolerance = RowSumTolerance(header);
  if (!tolerance.ok()) return tolerance.status();
  p.tolerance = *tolerance;
  if (header.analyses_size() == 0) {
    return absl::InvalidArgumentError(
        "analyses: an encoder-decoder pass needs an encoder_decoder analysis, got none");
  }
  // Two decoded blocks (attention and gradient) of the largest stack, and their row stats.
  const int64_t block = static_cast<int64_t>(std::max({e, d, x}));
  // One message's value norms [B, h, n] and residual weights [B, n].
  const int64_t side = std::max(p.n_enc, p.n_dec);
  p.working_bytes = (2 * block + int64_t{p.batch} * (p.num_heads + 1) * side) *
                        static_cast<int64_t>(sizeof(float)) +
                    side * static_cast<int64_t>(sizeof(analysis::RowStats));
  if (header.analyses_size() > limits.max_analyses) {
    return runtime::Refused(runtime::Refusal::kLimits,
                            absl::StrCat("analyses: ", header.analyses_size(),
                                         " analyses in one pass, over the server's max_analyses of ",
                                         limits.max_analyses));
  }
  int64_t response_bytes = 0;
  for (int i = 0; i < header.analyses_size(); ++i) {
    const std::string path = absl::StrCat("analyses[", i, "]");
    absl::StatusOr<EncoderDecoderAnalysisPlan> job = PlanAnalysis(header.analyses(i), layout, p);
    if (!job.ok()) {
      return header.analyses(i).kind_case() == v1::Analysis::kEncoderDecoder
                 ? InField(path, job.status())
                 : At(path, job.status());
    }
    if (job->spec.rules) p.needs_gradient = true;
    for (int b = 0; b < p.batch; ++b) {
      const int64_t rows = job->all_rows ? p.valid_dec[b] : analysis::NumMaps(job->readout);
      response_bytes += (rows * (p.valid_enc[b] - job->readout.prefix) +
                         (job->return_encoder ? int64_t{p.valid_enc[b]} * p.valid_enc[b] : 0) +
                         (job->return_decoder ? int64_t{p.valid_dec[b]} * p.valid_dec[b] : 0)) *
                        static_cast<int64_t>(sizeof(float));
    }
    p.working_bytes += p.batch * (analysis::EncoderDecoderWorkingBytes(p.n_enc, p.n_dec) +
                                  static_cast<int64_t>(p.n_dec) * p.n_enc * sizeof(float));
    p.analyses.push_back(*std::move(job));
  }
  if (response_bytes > limits.max_response_bytes) {
    return runtime::Refused(runtime::Refusal::kLimits,
                            absl::StrCat("response: the maps asked for are ", response_bytes,
                                         " bytes, over the server's max_response_bytes of ",
                                         limits.max_response_bytes));
  }
  p.working_bytes += response_bytes;  // the response's copy of the maps
  return p;
}

}  // namespace attnroll::session
