#include "server/session/encoder_decoder_session.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/session/attention_decode.h"
#include "server/session/degenerate_results.h"
#include "server/session/field_status.h"
#include "server/session/result_tensors.h"

namespace attnroll::session {
namespace {

const char* StackName(analysis::Stack s) {
  switch (s) {
    case analysis::Stack::kEncoder: return "STACK_ENCODER";
    case analysis::Stack::kDecoderSelf: return "STACK_DECODER_SELF";
    default: return "STACK_DECODER_CROSS";
  }
}

int StackOf(analysis::Stack s) {
  switch (s) {
    case analysis::Stack::kEncoder: return v1::STACK_ENCODER;
    case analysis::Stack::kDecoderSelf: return v1::STACK_DECODER_SELF;
    default: return v1::STACK_DECODER_CROSS;
  }
}

}  // namespace

EncoderDecoderSession::EncoderDecoderSession(EncoderDecoderPlan plan)
    : plan_(std::move(plan)), bytes_(plan_.max_pass_bytes) {
  for (const EncoderDecoderAnalysisPlan& a : plan_.analyses) {
    Job& job = jobs_.emplace_back(Job{a, {}});
    for (int b = 0; b < plan_.batch; ++b) {
      job.sequences.emplace_back(a.spec, plan_.num_heads, plan_.decoder_layers, plan_.valid_enc[b],
                                 plan_.valid_dec[b]);
    }
  }
}

EncoderDecoderSession::Position EncoderDecoderSession::Expected() const {
  if (next_ < plan_.encoder_layers) return {analysis::Stack::kEncoder, next_};
  const int q = next_ - plan_.encoder_layers;
  return {q % 2 == 0 ? analysis::Stack::kDecoderSelf : analysis::Stack::kDecoderCross, q / 2};
}

absl::Status EncoderDecoderSession::AddChunk(const v1::LayerChunk& chunk) {
  const absl::Time start = absl::Now();
  if (next_ == positions()) {
    return absl::InvalidArgumentError("layer: every layer of every stack was already received");
  }
  const Position want = Expected();
  if (chunk.stack() != StackOf(want.stack) || chunk.layer() != static_cast<uint32_t>(want.layer) ||
      chunk.head_start() != static_cast<uint32_t>(next_head_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: out of order: expected ", StackName(want.stack), " layer ", want.layer,
        " head_start ", next_head_, ", got ",
        v1::Stack_IsValid(chunk.stack()) ? v1::Stack_Name(chunk.stack()) : absl::StrCat("stack ", static_cast<int>(chunk.stack())),
        " layer ",
        chunk.layer(), " head_start ", chunk.head_start(),
        " (encoder layers first, then each decoder layer's self- and cross-attention)"));
  }
  const int rows = want.stack == analysis::Stack::kEncoder ? plan_.n_enc : plan_.n_dec;
  const int cols = want.stack == analysis::Stack::kDecoderSelf ? plan_.n_dec : plan_.n_enc;
  // Each sequence's valid query rows and keys.
  const std::vector<int>& valid_rows =
      want.stack == analysis::Stack::kEncoder ? plan_.valid_enc : plan_.valid_dec;
  const std::vector<int>& valid_cols =
      want.stack == analysis::Stack::kDecoderSelf ? plan_.valid_dec : plan_.valid_enc;
  const std::string field = absl::StrCat(StackName(want.stack), " layer[", want.layer, "]");
  const v1::Tensor& t = chunk.attention();
  const v1::Tensor& g = chunk.gradient();
  for (absl::Status s :
       {CheckAttentionTensor(t, field + ".attention", plan_.batch, next_head_, plan_.num_heads, rows,
                             cols),
        CheckGradientTensor(chunk, field + ".gradient", plan_.needs_gradient,
                            "the RULES composition needs a gradient on every layer")}) {
    if (!s.ok()) return s;
  }
  const int h = static_cast<int>(t.shape(1));
  // Value norms: on every message of a stack or on none; [B, h, keys].
  int& stack_norms = value_norms_[static_cast<int>(want.stack)];
  if (stack_norms < 0) stack_norms = chunk.has_value_norms() ? 1 : 0;
  const bool with_norms = stack_norms == 1;
  if (chunk.has_value_norms() != with_norms) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".value_norms",
        with_norms ? ": expected value norms (the stack's first message had them), got none"
                   : ": the stack's first message had no value norms, so none may follow"));
  }
  std::vector<float> norms;
  if (with_norms) {
    absl::StatusOr<std::vector<float>> v =
        ValueNormsOf(chunk.value_norms(), field + ".value_norms", plan_.batch, h, next_head_, cols, valid_cols);
    if (!v.ok()) return v.status();
    norms = *std::move(v);
  }
  // Residual weights: self-attention layers only, [B] or [B, rows].
  std::vector<float> residual;
  if (chunk.has_residual_weights()) {
    if (want.stack == analysis::Stack::kDecoderCross) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".residual_weights: expected none on cross-attention (it has no residual), got a tensor"));
    }
    absl::StatusOr<std::vector<float>> w = ResidualWeightsOf(
        chunk.residual_weights(), field + ".residual_weights", plan_.batch, rows, valid_rows, next_head_);
    if (!w.ok()) return w.status();
    layer_residual_ = *std::move(w);
  }
  if (absl::Status s = bytes_.Add(chunk); !s.ok()) return s;
  const int64_t block = static_cast<int64_t>(rows) * cols;
  block_.resize(block);
  if (plan_.needs_gradient) gblock_.resize(block);
  stats_.resize(rows);
  const float tol = plan_.tolerance > 0 ? plan_.tolerance : DefaultRowSumTolerance(t.dtype());
  const bool causal = plan_.causal && want.stack == analysis::Stack::kDecoderSelf;
  for (int b = 0; b < plan_.batch; ++b) {
    // The sequence's block, cropped to its valid rows and keys.
    const int mr = valid_rows[b], mc = valid_cols[b];
    for (int hh = 0; hh < h; ++hh) {
      const int head = next_head_ + hh;
      const int64_t offset = (static_cast<int64_t>(b) * h + hh) * block;
      DecodeBlock(t.dtype(), t.data(), offset, mr, mc, cols, block_.data());
      const analysis::ConstMatrixView view(block_.data(), mr, mc, Eigen::OuterStride<>(mc));
      const BlockLocation where{want.layer, head, b};
      analysis::ComputeRowStats(view, 0, causal, stats_.data());
      if (absl::Status s = ValidateAttentionRows(block_.data(), mr, mc, mc, 0, tol, causal, where,
                                                 stats_.data());
          !s.ok()) {
        return Whose(StackName(want.stack), s);
      }
      if (with_norms) {
        analysis::ApplyValueNorms(norms.data() + (static_cast<int64_t>(b) * h + hh) * cols, mr, mc, mc,
                                  block_.data());
      }
      std::optional<analysis::ConstMatrixView> gview;
      if (plan_.needs_gradient) {
        DecodeBlock(g.dtype(), g.data(), offset, mr, mc, cols, gblock_.data());
        if (absl::Status s = ValidateGradientRows(gblock_.data(), mr, mc, mc, 0, where); !s.ok()) {
          return Whose(StackName(want.stack), s);
        }
        gview.emplace(gblock_.data(), mr, mc, Eigen::OuterStride<>(mc));
      }
      for (Job& job : jobs_) {
        job.sequences[b].AddHead(want.stack, head, view,
                                 job.plan.spec.rules && gview ? &*gview : nullptr);
      }
    }
  }
  next_head_ += h;
  if (next_head_ == plan_.num_heads) {
    for (Job& job : jobs_) {
      for (int b = 0; b < plan_.batch; ++b) {
        job.sequences[b].EndLayer(want.stack, want.layer,
                                  layer_residual_.empty() ? nullptr : layer_residual_.data() + b * rows);
      }
    }
    layer_residual_.clear();
    next_head_ = 0;
    ++next_;
  }
  timing_.AddCompute(start);
  return absl::OkStatus();
}

absl::StatusOr<v1::ExplainResponse> EncoderDecoderSession::Finish(const FinishContext&) {
  if (next_ != positions()) {
    const Position want = Expected();
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: missing: the stream ended before ", StackName(want.stack), " layer ", want.layer,
        " head ", next_head_));
  }
  const absl::Time start = absl::Now();
  v1::ExplainResponse response;
  response.set_request_id(plan_.request_id);
  response.set_server_version(ATTNROLL_VERSION);
  for (Job& job : jobs_) {
    v1::AnalysisResult* result = response.add_results();
    result->set_name(job.plan.name);
    result->set_path(job.plan.spec.rules ? "encoder_decoder_rules" : "encoder_decoder_rollout");
    // The decoder rows read out of sequence b (of its md_b decoder tokens).
    auto rows_of = [&](int b) {
      std::vector<int> rows;
      if (job.plan.all_rows) {
        for (int r = 0; r < plan_.valid_dec[b]; ++r) rows.push_back(r);
      } else if (!job.plan.readout.mean_of_rows) {
        rows = analysis::ResolvedRows(job.plan.readout, plan_.valid_dec[b]);
      }
      return rows;
    };
    for (int r : rows_of(0)) result->add_rows(r);
    for (int b = 0; b < plan_.batch; ++b) {
      const analysis::EncoderDecoderRelevance& seq = job.sequences[b];
      const analysis::MatrixF& r_de = seq.decoder_encoder();
      const std::vector<int> rows = rows_of(b);
      const int me = plan_.valid_enc[b];
      const int len = me - job.plan.readout.prefix;
      analysis::Maps maps;
      maps.shape.push_back(job.plan.readout.mean_of_rows ? 1 : static_cast<int64_t>(rows.size()));
      for (int64_t dim : analysis::MapShape(job.plan.readout, me)) maps.shape.push_back(dim);
      maps.values.resize(static_cast<size_t>(maps.shape[0]) * len);
      Degenerate d;
      d.maps = maps.shape[0];
      if (job.plan.readout.mean_of_rows) {
        const analysis::RowVectorF mean = (r_de.cast<double>().colwise().mean()).cast<float>();
        d.zero_maps += !analysis::WriteMap(job.plan.readout, mean, maps.values.data());
      } else {
        for (size_t k = 0; k < rows.size(); ++k) {
          d.zero_maps += !analysis::WriteMap(job.plan.readout, r_de.row(rows[k]), maps.values.data() + k * len);
        }
      }
      for (const std::string& w : DegenerateMessages(b, d)) result->add_warnings(w);
      ToTensor(maps, result->add_maps());
      if (job.plan.return_encoder) ToTensor(seq.encoder(), result->add_encoder_maps());
      if (job.plan.return_decoder) ToTensor(seq.decoder(), result->add_decoder_maps());
    }
  }
  timing_.Stamp(start, response.mutable_timing());
  return response;
}

}  // namespace attnroll::session
