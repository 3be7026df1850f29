#include "server/service/encoder_decoder_session.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "server/service/analysis_options.h"
#include "server/service/attention_decode.h"
#include "server/service/status_util.h"
#include "server/service/result_tensors.h"

namespace attnroll::service {
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

absl::StatusOr<std::unique_ptr<EncoderDecoderSession>> EncoderDecoderSession::Create(
    const v1::PassHeader& header, const PassLimits& limits) {
  const v1::Layout& layout = header.layout();
  const v1::EncoderDecoder& ed = layout.encoder_decoder();
  if (layout.num_layers() != 0 || layout.num_tokens() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout: num_layers and num_tokens must be 0 with encoder_decoder (its stacks give them), "
        "got ", layout.num_layers(), " and ", layout.num_tokens()));
  }
  if (layout.valid_lengths_size() != 0) {
    return absl::InvalidArgumentError(
        "layout.valid_lengths: padding is not supported with encoder_decoder yet");
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
  auto session = std::unique_ptr<EncoderDecoderSession>(new EncoderDecoderSession());
  EncoderDecoderSession& p = *session;
  p.request_id_ = header.request_id();
  p.num_heads_ = static_cast<int>(layout.num_heads());
  p.batch_ = static_cast<int>(batch);
  p.encoder_layers_ = static_cast<int>(ed.encoder_layers());
  p.decoder_layers_ = static_cast<int>(ed.decoder_layers());
  p.n_enc_ = static_cast<int>(ed.encoder_tokens());
  p.n_dec_ = static_cast<int>(ed.decoder_tokens());
  p.causal_ = layout.causal();
  p.max_pass_bytes_ = limits.max_pass_bytes;
  const uint64_t e = uint64_t{ed.encoder_tokens()} * ed.encoder_tokens();
  const uint64_t d = uint64_t{ed.decoder_tokens()} * ed.decoder_tokens();
  const uint64_t x = uint64_t{ed.decoder_tokens()} * ed.encoder_tokens();
  const uint64_t min_bytes =
      uint64_t{batch} * layout.num_heads() * (ed.encoder_layers() * e + ed.decoder_layers() * (d + x)) * 2;
  if (min_bytes > static_cast<uint64_t>(limits.max_pass_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "layout: the encoder-decoder pass is at least ", min_bytes,
        " attention bytes, over the server's max_pass_bytes of ", limits.max_pass_bytes));
  }
  const float tol = header.row_sum_tolerance();
  if (!(std::isfinite(tol) && tol >= 0.0f && tol < 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.row_sum_tolerance: expected 0 <= tolerance < 1, got ", tol));
  }
  p.tolerance_ = tol;
  if (header.analyses_size() == 0) {
    return absl::InvalidArgumentError(
        "analyses: an encoder-decoder pass needs an encoder_decoder analysis, got none");
  }
  const int64_t block = static_cast<int64_t>(std::max({e, d, x}));
  int64_t working = 2 * block * static_cast<int64_t>(sizeof(float)) +
                    static_cast<int64_t>(std::max(p.n_enc_, p.n_dec_)) * sizeof(analysis::RowStats);
  for (int i = 0; i < header.analyses_size(); ++i) {
    const v1::Analysis& a = header.analyses(i);
    if (a.kind_case() != v1::Analysis::kEncoderDecoder) {
      return absl::InvalidArgumentError(absl::StrCat(
          "analyses[", i, "]: an encoder-decoder pass takes encoder_decoder analyses only"));
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
    enc_layout.set_num_tokens(std::max(ed.encoder_tokens(), ed.decoder_tokens()));
    absl::StatusOr<analysis::RolloutSpec> rs = ToRolloutSpec(as_rollout, enc_layout);
    if (!rs.ok()) {
      absl::string_view message = rs.status().message();
      if (absl::StartsWith(message, "rollout.")) message.remove_prefix(8);
      return absl::Status(rs.status().code(),
                          absl::StrCat("analyses[", i, "].encoder_decoder.", message));
    }
    Job job;
    job.name = a.name();
    job.spec.rules = o.composition() == v1::COMPOSITION_RULES;
    if (o.composition() != v1::COMPOSITION_RULES && o.composition() != v1::COMPOSITION_ROLLOUT) {
      return absl::InvalidArgumentError(absl::StrCat(
          "analyses[", i, "].encoder_decoder.composition: expected RULES or ROLLOUT, got ",
          static_cast<int>(o.composition())));
    }
    job.spec.fusion = rs->fusion;
    job.spec.head_weights = rs->head_weights;
    job.spec.residual = rs->residual;
    job.spec.renormalize = rs->renormalize;
    job.readout = rs->readout;
    job.all_rows = job.readout.rows.empty() && !job.readout.mean_of_rows && !job.readout.last_row;
    for (int r : job.readout.rows) {
      if (r >= p.n_dec_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "analyses[", i, "].encoder_decoder.readout.rows: row ", r,
            " out of range, expected 0 <= row < decoder_tokens = ", p.n_dec_));
      }
    }
    analysis::ReadoutSpec axis = job.readout;  // checked against the encoder axis
    axis.rows.clear();
    if (absl::Status s = analysis::ValidateEncoderDecoderSpec(job.spec, p.num_heads_); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("analyses[", i, "].", s.message()));
    }
    if (absl::Status s = analysis::ValidateReadout(axis, p.n_enc_); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("analyses[", i, "].encoder_decoder.", s.message(),
                                                 " (on the encoder tokens)"));
    }
    job.return_encoder = o.return_encoder();
    job.return_decoder = o.return_decoder();
    if (job.spec.rules) p.needs_gradient_ = true;
    working += p.batch_ * (analysis::EncoderDecoderWorkingBytes(p.n_enc_, p.n_dec_) +
                           static_cast<int64_t>(p.n_dec_) * p.n_enc_ * sizeof(float));
    p.jobs_.push_back(std::move(job));
  }
  p.working_bytes_ = working;
  for (Job& job : p.jobs_) {
    for (int b = 0; b < p.batch_; ++b) {
      job.sequences.emplace_back(job.spec, p.num_heads_, p.decoder_layers_, p.n_enc_, p.n_dec_);
    }
  }
  p.started_ = absl::Now();
  return session;
}

EncoderDecoderSession::Position EncoderDecoderSession::Expected() const {
  if (next_ < encoder_layers_) return {analysis::Stack::kEncoder, next_};
  const int q = next_ - encoder_layers_;
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
  const int rows = want.stack == analysis::Stack::kEncoder ? n_enc_ : n_dec_;
  const int cols = want.stack == analysis::Stack::kDecoderSelf ? n_dec_ : n_enc_;
  const std::string field = absl::StrCat(StackName(want.stack), " layer[", want.layer, "].attention");
  const v1::Tensor& t = chunk.attention();
  if (absl::Status s = CheckTensorBytes(t, field); !s.ok()) return s;
  const int64_t heads_left = num_heads_ - next_head_;
  if (t.shape_size() != 4 || t.shape(0) != batch_ || t.shape(1) < 1 || t.shape(1) > heads_left ||
      t.shape(2) != rows || t.shape(3) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".shape: expected [", batch_, ", h, ", rows, ", ", cols, "] with 1 <= h <= ", heads_left,
        ", got [", absl::StrJoin(t.shape(), ", "), "]"));
  }
  const v1::Tensor& g = chunk.gradient();
  if (chunk.has_gradient() != needs_gradient_) {
    return absl::InvalidArgumentError(absl::StrCat(
        StackName(want.stack), " layer[", want.layer, "].gradient: ",
        needs_gradient_ ? "the RULES composition needs a gradient on every layer, got none"
                        : "no analysis uses gradients, but one was sent"));
  }
  if (needs_gradient_) {
    if (absl::Status s = CheckTensorBytes(g, field + " gradient"); !s.ok()) return s;
    if (!std::equal(g.shape().begin(), g.shape().end(), t.shape().begin(), t.shape().end())) {
      return absl::InvalidArgumentError(absl::StrCat(field, " gradient.shape: expected [",
                                                     absl::StrJoin(t.shape(), ", "), "], got [",
                                                     absl::StrJoin(g.shape(), ", "), "]"));
    }
  }
  bytes_received_ += static_cast<int64_t>(t.data().size() + g.data().size());
  if (bytes_received_ > max_pass_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pass: ", bytes_received_, " bytes exceed the server's max_pass_bytes of ", max_pass_bytes_));
  }
  const int h = static_cast<int>(t.shape(1));
  const int64_t block = static_cast<int64_t>(rows) * cols;
  block_.resize(block);
  if (needs_gradient_) gblock_.resize(block);
  stats_.resize(rows);
  const float tol = tolerance_ > 0 ? tolerance_ : DefaultRowSumTolerance(t.dtype());
  const bool causal = causal_ && want.stack == analysis::Stack::kDecoderSelf;
  for (int b = 0; b < batch_; ++b) {
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
        return absl::Status(s.code(), absl::StrCat(StackName(want.stack), " ", s.message()));
      }
      std::optional<analysis::ConstMatrixView> gview;
      if (needs_gradient_) {
        DecodeBlock(g.dtype(), g.data(), offset, rows, cols, cols, gblock_.data());
        if (absl::Status s = ValidateGradientRows(gblock_.data(), rows, cols, cols, 0, where); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat(StackName(want.stack), " ", s.message()));
        }
        gview.emplace(gblock_.data(), rows, cols, Eigen::OuterStride<>(cols));
      }
      for (Job& job : jobs_) {
        job.sequences[b].AddHead(want.stack, head, view,
                                 job.spec.rules && gview ? &*gview : nullptr);
      }
    }
  }
  next_head_ += h;
  if (next_head_ == num_heads_) {
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
  response.set_request_id(request_id_);
  response.set_server_version(ATTNROLL_VERSION);
  for (Job& job : jobs_) {
    v1::AnalysisResult* result = response.add_results();
    result->set_name(job.name);
    result->set_path(job.spec.rules ? "encoder_decoder_rules" : "encoder_decoder_rollout");
    std::vector<int> rows;
    if (job.all_rows) {
      for (int r = 0; r < n_dec_; ++r) rows.push_back(r);
    } else if (!job.readout.mean_of_rows) {
      rows = analysis::ResolvedRows(job.readout, n_dec_);
    }
    for (int r : rows) result->add_rows(r);
    for (const analysis::EncoderDecoderRelevance& seq : job.sequences) {
      const analysis::MatrixF& r_de = seq.decoder_encoder();
      const int len = n_enc_ - job.readout.prefix;
      analysis::Maps maps;
      maps.shape.push_back(job.readout.mean_of_rows ? 1 : static_cast<int64_t>(rows.size()));
      for (int64_t dim : analysis::MapShape(job.readout, n_enc_)) maps.shape.push_back(dim);
      maps.values.resize(static_cast<size_t>(maps.shape[0]) * len);
      if (job.readout.mean_of_rows) {
        const analysis::RowVectorF mean = (r_de.cast<double>().colwise().mean()).cast<float>();
        analysis::WriteMap(job.readout, mean, maps.values.data());
      } else {
        for (size_t k = 0; k < rows.size(); ++k) {
          analysis::WriteMap(job.readout, r_de.row(rows[k]), maps.values.data() + k * len);
        }
      }
      ToTensor(maps, result->add_maps());
      if (job.return_encoder) ToTensor(seq.encoder(), result->add_encoder_maps());
      if (job.return_decoder) ToTensor(seq.decoder(), result->add_decoder_maps());
    }
  }
  const absl::Time end = absl::Now();
  compute_ += end - start;
  response.mutable_timing()->set_total_seconds(absl::ToDoubleSeconds(end - started_));
  response.mutable_timing()->set_compute_seconds(absl::ToDoubleSeconds(compute_));
  return response;
}

}  // namespace attnroll::service
