#include "server/session/encoder_decoder_session.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/session/attention_decode.h"
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
    : plan_(std::move(plan)), bytes_(plan_.max_pass_bytes), started_(absl::Now()) {
  for (const EncoderDecoderAnalysisPlan& a : plan_.analyses) {
    Job& job = jobs_.emplace_back(Job{a, {}});
    for (int b = 0; b < plan_.batch; ++b) {
      job.sequences.emplace_back(a.spec, plan_.num_heads, plan_.decoder_layers, plan_.n_enc,
                                 plan_.n_dec);
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
        " head_start ", next_head_, ", got stack ", static_cast<int>(chunk.stack()), " layer ",
        chunk.layer(), " head_start ", chunk.head_start(),
        " (encoder layers first, then each decoder layer's self- and cross-attention)"));
  }
  if (chunk.has_residual_weights() || chunk.has_value_norms()) {
    return absl::InvalidArgumentError(
        "layer: residual_weights and value_norms are not supported with encoder_decoder yet");
  }
  const int rows = want.stack == analysis::Stack::kEncoder ? plan_.n_enc : plan_.n_dec;
  const int cols = want.stack == analysis::Stack::kDecoderSelf ? plan_.n_dec : plan_.n_enc;
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
  if (absl::Status s = bytes_.Add(chunk); !s.ok()) return s;
  const int h = static_cast<int>(t.shape(1));
  const int64_t block = static_cast<int64_t>(rows) * cols;
  block_.resize(block);
  if (plan_.needs_gradient) gblock_.resize(block);
  stats_.resize(rows);
  const float tol = plan_.tolerance > 0 ? plan_.tolerance : DefaultRowSumTolerance(t.dtype());
  const bool causal = plan_.causal && want.stack == analysis::Stack::kDecoderSelf;
  for (int b = 0; b < plan_.batch; ++b) {
    for (int hh = 0; hh < h; ++hh) {
      const int head = next_head_ + hh;
      const int64_t offset = (static_cast<int64_t>(b) * h + hh) * block;
      DecodeBlock(t.dtype(), t.data(), offset, rows, cols, cols, block_.data());
      const analysis::ConstMatrixView view(block_.data(), rows, cols, Eigen::OuterStride<>(cols));
      const BlockLocation where{want.layer, head, b};
      analysis::ComputeRowStats(view, 0, causal, stats_.data());
      if (absl::Status s = ValidateAttentionRows(block_.data(), rows, cols, cols, 0, tol, causal,
                                                 where, stats_.data());
          !s.ok()) {
        return Whose(StackName(want.stack), s);
      }
      std::optional<analysis::ConstMatrixView> gview;
      if (plan_.needs_gradient) {
        DecodeBlock(g.dtype(), g.data(), offset, rows, cols, cols, gblock_.data());
        if (absl::Status s = ValidateGradientRows(gblock_.data(), rows, cols, cols, 0, where); !s.ok()) {
          return Whose(StackName(want.stack), s);
        }
        gview.emplace(gblock_.data(), rows, cols, Eigen::OuterStride<>(cols));
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
      for (auto& seq : job.sequences) seq.EndLayer(want.stack, want.layer);
    }
    next_head_ = 0;
    ++next_;
  }
  compute_ += absl::Now() - start;
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
    std::vector<int> rows;
    if (job.plan.all_rows) {
      for (int r = 0; r < plan_.n_dec; ++r) rows.push_back(r);
    } else if (!job.plan.readout.mean_of_rows) {
      rows = analysis::ResolvedRows(job.plan.readout, plan_.n_dec);
    }
    for (int r : rows) result->add_rows(r);
    for (const analysis::EncoderDecoderRelevance& seq : job.sequences) {
      const analysis::MatrixF& r_de = seq.decoder_encoder();
      const int len = plan_.n_enc - job.plan.readout.prefix;
      analysis::Maps maps;
      maps.shape.push_back(job.plan.readout.mean_of_rows ? 1 : static_cast<int64_t>(rows.size()));
      for (int64_t dim : analysis::MapShape(job.plan.readout, plan_.n_enc)) maps.shape.push_back(dim);
      maps.values.resize(static_cast<size_t>(maps.shape[0]) * len);
      if (job.plan.readout.mean_of_rows) {
        const analysis::RowVectorF mean = (r_de.cast<double>().colwise().mean()).cast<float>();
        analysis::WriteMap(job.plan.readout, mean, maps.values.data());
      } else {
        for (size_t k = 0; k < rows.size(); ++k) {
          analysis::WriteMap(job.plan.readout, r_de.row(rows[k]), maps.values.data() + k * len);
        }
      }
      ToTensor(maps, result->add_maps());
      if (job.plan.return_encoder) ToTensor(seq.encoder(), result->add_encoder_maps());
      if (job.plan.return_decoder) ToTensor(seq.decoder(), result->add_decoder_maps());
    }
  }
  const absl::Time end = absl::Now();
  compute_ += end - start;
  response.mutable_timing()->set_total_seconds(absl::ToDoubleSeconds(end - started_));
  response.mutable_timing()->set_compute_seconds(absl::ToDoubleSeconds(compute_));
  return response;
}

}  // namespace attnroll::session
