#include "server/service/pass_session.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/analysis/attention_flow.h"
#include "server/analysis/flow_maps.h"
#include "server/service/analysis_options.h"
#include "server/service/attention_decode.h"
#include "server/service/parallel_for.h"
#include "server/service/status_util.h"
#include "server/service/result_tensors.h"

namespace attnroll::service {
namespace {

// Floats in one decoded strip of rows (256 KiB: fits in L2 with its fused strip).
constexpr int kStripFloats = 64 * 1024;

}  // namespace

absl::StatusOr<std::unique_ptr<PassSession>> PassSession::Create(const v1::PassHeader& header,
                                                                 const PassLimits& limits,
                                                                 int threads) {
  if (!header.has_layout()) {
    return absl::InvalidArgumentError("header.layout: expected a layout, got none");
  }
  const v1::Layout& layout = header.layout();
  const uint32_t batch = layout.batch_size() == 0 ? 1 : layout.batch_size();
  for (absl::Status s : {CheckCount("layout.num_layers", layout.num_layers(), limits.max_layers),
                         CheckCount("layout.num_heads", layout.num_heads(), limits.max_heads),
                         CheckCount("layout.num_tokens", layout.num_tokens(), limits.max_tokens),
                         CheckCount("layout.batch_size", batch, limits.max_batch)}) {
    if (!s.ok()) return s;
  }
  const uint64_t n = layout.num_tokens();
  // The smallest wire dtype is 2 bytes: a pass that cannot fit even so is refused now.
  const uint64_t min_pass_bytes = uint64_t{batch} * layout.num_layers() * layout.num_heads() * n * n * 2;
  if (min_pass_bytes > static_cast<uint64_t>(limits.max_pass_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "layout: a pass of ", batch, " x ", layout.num_layers(), " x ", layout.num_heads(), " x ", n,
        " x ", n, " attention values is at least ", min_pass_bytes,
        " bytes, over the server's max_pass_bytes of ", limits.max_pass_bytes));
  }

  auto session = std::unique_ptr<PassSession>(new PassSession());
  session->request_id_ = header.request_id();
  session->num_layers_ = static_cast<int>(layout.num_layers());
  session->num_heads_ = static_cast<int>(layout.num_heads());
  session->num_tokens_ = static_cast<int>(n);
  session->batch_ = static_cast<int>(batch);
  session->causal_ = layout.causal();
  session->max_pass_bytes_ = limits.max_pass_bytes;

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
    session->valid_.push_back(static_cast<int>(m));
  }
  const int min_valid = *std::min_element(session->valid_.begin(), session->valid_.end());
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
  const float tol = header.row_sum_tolerance();
  if (!(std::isfinite(tol) && tol >= 0.0f && tol < 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.row_sum_tolerance: expected 0 <= tolerance < 1, got ", tol));
  }
  session->tolerance_ = tol;

  // Analyses: one default rollout when none is asked for.
  std::vector<v1::Analysis> analyses(header.analyses().begin(), header.analyses().end());
  if (analyses.empty()) analyses.emplace_back().mutable_rollout();
  // block_ and gblock_, value norms and residual weights of one message, stats_.
  int64_t working = (2 * std::max<int64_t>(kStripFloats, n) +
                     static_cast<int64_t>(batch) * (layout.num_heads() + 1) * n) *
                        static_cast<int64_t>(sizeof(float)) +
                    static_cast<int64_t>(n) * static_cast<int64_t>(sizeof(analysis::RowStats));
  double flow_cost = 0;
  for (size_t i = 0; i < analyses.size(); ++i) {
    const v1::Analysis& a = analyses[i];
    absl::StatusOr<analysis::RolloutSpec> spec;
    switch (a.kind_case()) {
      case v1::Analysis::kRollout: spec = ToRolloutSpec(a.rollout(), layout); break;
      case v1::Analysis::kFlow: spec = ToFlowGraphSpec(a.flow(), layout); break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "analyses[", i, "]: expected one analysis kind (rollout or flow), got none"));
    }
    if (!spec.ok()) {
      return absl::Status(spec.status().code(),
                          absl::StrCat("analyses[", i, "].", spec.status().message()));
    }
    Job job{a.name(), *spec, analysis::ChooseRolloutPath(*spec, session->num_layers_, n), {}};
    if (a.kind_case() == v1::Analysis::kFlow) {
      job.flow = true;
      job.all_rows = a.flow().all_rows();
      job.raw = a.flow().raw();
      job.path = analysis::RolloutPath::kRow;  // keeps every At_l for the max flows
    }
    if (spec->gradient != analysis::GradientRule::kNone) session->needs_gradient_ = true;
    const int layers = analysis::LastLayer(*spec, session->num_layers_) - spec->first_layer + 1;
    for (int b = 0; b < session->batch_; ++b) {
      const int m = session->valid_[b];
      if (absl::Status s = analysis::ValidateRolloutSpec(*spec, session->num_layers_,
                                                         session->num_heads_, m);
          !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("analyses[", i, "] (sequence ", b, "): ",
                                                   s.message()));
      }
      working += analysis::RolloutWorkingBytes(*spec, session->num_layers_, session->num_heads_, m,
                                               job.path);
      if (job.flow) {
        const int sinks = job.all_rows ? m : analysis::NumMaps(spec->readout);
        flow_cost += analysis::EstimateFlowCost(layers, m, sinks);
        // Each thread's solver scratch, and the flows (double) of the sinks.
        working += threads * analysis::AttentionFlow::WorkingBytes(layers, m) +
                   static_cast<int64_t>(sinks) * m * static_cast<int64_t>(sizeof(double) + sizeof(float));
      }
    }
    session->jobs_.push_back(std::move(job));
  }
  if (flow_cost > limits.max_flow_cost) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "flow: the pass's attention flow is estimated at %.3g work units (~%.3g core-seconds), over "
        "the server's max_flow_cost of %.3g; ask for fewer output tokens or layers",
        flow_cost, flow_cost * 1e-9, limits.max_flow_cost));
  }
  session->working_bytes_ = working;
  for (Job& job : session->jobs_) {
    for (int b = 0; b < session->batch_; ++b) {
      job.sequences.emplace_back(job.spec, session->num_layers_, session->num_heads_,
                                 session->valid_[b], job.path);
    }
  }
  session->started_ = absl::Now();
  return session;
}

absl::Status PassSession::CheckChunkPosition(const v1::LayerChunk& chunk) const {
  const uint32_t layer = chunk.layer(), head = chunk.head_start();
  if (layer == static_cast<uint32_t>(next_layer_) && head == static_cast<uint32_t>(next_head_)) {
    return absl::OkStatus();
  }
  if (next_layer_ == num_layers_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: all ", num_layers_, " layers were already received, got layer ", layer, " head ", head));
  }
  if (layer >= static_cast<uint32_t>(num_layers_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: expected layer < num_layers = ", num_layers_, ", got ", layer));
  }
  if (layer < static_cast<uint32_t>(next_layer_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: duplicate: layer ", layer, " was already received; expected layer ", next_layer_,
        " head ", next_head_));
  }
  if (layer > static_cast<uint32_t>(next_layer_)) {
    if (next_head_ == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer: out of order: expected layer ", next_layer_, ", got ", layer,
          " (layers must arrive in order; layer ", next_layer_, " is missing)"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: out of order: layer ", next_layer_, " is incomplete (heads ", next_head_, "..",
        num_heads_ - 1, " missing), got layer ", layer));
  }
  if (head < static_cast<uint32_t>(next_head_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "head_start: overlap: layer ", layer, " heads 0..", next_head_ - 1,
        " were already received, got head_start ", head, "; expected ", next_head_));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "head_start: gap: expected head_start ", next_head_, " for layer ", layer, ", got ", head,
      " (heads ", next_head_, "..", head - 1, " missing)"));
}

absl::Status PassSession::AddChunk(const v1::LayerChunk& chunk) {
  const absl::Time start = absl::Now();
  if (absl::Status s = CheckChunkPosition(chunk); !s.ok()) return s;
  const std::string field = absl::StrCat("layer[", chunk.layer(), "].attention");
  if (!chunk.has_attention()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected a tensor, got none"));
  }
  const v1::Tensor& t = chunk.attention();
  if (absl::Status s = CheckTensorBytes(t, field); !s.ok()) return s;
  const int64_t n = num_tokens_;
  const int64_t heads_left = num_heads_ - next_head_;
  if (t.shape_size() != 4 || t.shape(0) != batch_ || t.shape(1) < 1 || t.shape(1) > heads_left ||
      t.shape(2) != n || t.shape(3) != n) {
    std::string seen;
    for (int i = 0; i < t.shape_size(); ++i) absl::StrAppend(&seen, i ? ", " : "", t.shape(i));
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".shape: expected [", batch_, ", h, ", n, ", ", n, "] with 1 <= h <= ", heads_left,
        " (heads ", next_head_, "..", num_heads_ - 1, " of the layer remain), got [", seen, "]"));
  }
  if (absl::Status s = CheckGradient(chunk); !s.ok()) return s;
  if (absl::Status s = TakeResidualWeights(chunk); !s.ok()) return s;
  if (absl::Status s = TakeValueNorms(chunk); !s.ok()) return s;
  const v1::Tensor& g = chunk.gradient();
  bytes_received_ += static_cast<int64_t>(t.data().size() + g.data().size());
  if (bytes_received_ > max_pass_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pass: ", bytes_received_, " attention bytes exceed the server's max_pass_bytes of ",
        max_pass_bytes_));
  }
  const int h = static_cast<int>(t.shape(1));
  if (block_.empty()) block_.resize(std::max<size_t>(kStripFloats, num_tokens_));
  if (needs_gradient_ && gblock_.empty()) gblock_.resize(block_.size());
  if (stats_.empty()) stats_.resize(num_tokens_);
  for (int b = 0; b < batch_; ++b) {
    const int m = valid_[b];
    // Strips of rows small enough to stay in cache while every head of the
    // message is decoded, checked and added to the same strip of the fused
    // matrix. Cropping to m x m drops the padding before any math.
    const int strip = std::max(1, std::min(m, kStripFloats / m));
    for (int r0 = 0; r0 < m; r0 += strip) {
      for (int hh = 0; hh < h; ++hh) {
        if (absl::Status s = AddHeadStrip(chunk, b, hh, r0, std::min(strip, m - r0)); !s.ok()) {
          return s;
        }
      }
    }
  }
  if (next_head_ + h == num_heads_) {
    for (Job& job : jobs_) {
      for (int b = 0; b < batch_; ++b) {
        job.sequences[b].EndLayer(
            next_layer_, layer_residual_.empty() ? nullptr : layer_residual_.data() + b * num_tokens_);
      }
    }
    layer_residual_.clear();
  }
  next_head_ += h;
  if (next_head_ == num_heads_) {
    next_head_ = 0;
    ++next_layer_;
  }
  compute_ += absl::Now() - start;
  return absl::OkStatus();
}

// Rows [r0, r0 + rows) of head hh (of the chunk) of sequence b: decode,
// validate, and add to every analysis.
absl::Status PassSession::AddHeadStrip(const v1::LayerChunk& chunk, int b, int hh, int r0, int rows) {
  const v1::Tensor& t = chunk.attention();
  const v1::Tensor& g = chunk.gradient();
  const int h = static_cast<int>(t.shape(1));
  const int head = next_head_ + hh;
  const int m = valid_[b];
  const int64_t n = num_tokens_;
  const int64_t offset = ((static_cast<int64_t>(b) * h + hh) * n + r0) * n;
  const float tol = tolerance_ > 0 ? tolerance_ : DefaultRowSumTolerance(t.dtype());
  const BlockLocation where{next_layer_, head, b};
  const float* rows_ptr;
  int64_t stride;
  if (t.dtype() == v1::DTYPE_FP32 && !value_norms_) {  // read the wire bytes in place
    rows_ptr = reinterpret_cast<const float*>(t.data().data()) + offset;
    stride = n;
  } else {
    DecodeBlock(t.dtype(), t.data(), offset, rows, m, n, block_.data());
    rows_ptr = block_.data();
    stride = m;
  }
  const analysis::ConstMatrixView view(rows_ptr, rows, m, Eigen::OuterStride<>(stride));
  // The gradient's same rows (validated finite), when sent.
  std::optional<analysis::ConstMatrixView> gview;
  if (needs_gradient_) {
    const float* gptr = reinterpret_cast<const float*>(g.data().data()) + offset;
    int64_t gstride = n;
    if (g.dtype() != v1::DTYPE_FP32) {
      DecodeBlock(g.dtype(), g.data(), offset, rows, m, n, gblock_.data());
      gptr = gblock_.data();
      gstride = m;
    }
    if (absl::Status s = ValidateGradientRows(gptr, rows, m, gstride, r0, where); !s.ok()) return s;
    gview.emplace(gptr, rows, m, Eigen::OuterStride<>(gstride));
  }
  analysis::RowStats* stats = stats_.data();
  if (value_norms_) {
    // Validate the attention as sent, then weight its columns by the norms.
    analysis::ComputeRowStats(view, r0, causal_, stats);
    if (absl::Status s = ValidateAttentionRows(rows_ptr, rows, m, stride, r0, tol, causal_, where, stats);
        !s.ok()) {
      return s;
    }
    analysis::ApplyValueNorms(norms_.data() + (static_cast<int64_t>(b) * h + hh) * n, rows, m, m,
                              block_.data());
    stats = nullptr;
  }
  // The first analysis that fuses this layer measures the rows as it reads
  // them; a bad row fails the whole pass, so fusing first is safe.
  for (Job& job : jobs_) {
    if (job.sequences[b].AddHeadRows(next_layer_, head, r0, view, gview ? &*gview : nullptr, stats,
                                     causal_)) {
      stats = nullptr;
    }
  }
  if (value_norms_) return absl::OkStatus();
  if (stats != nullptr) analysis::ComputeRowStats(view, r0, causal_, stats);
  return ValidateAttentionRows(rows_ptr, rows, m, stride, r0, tol, causal_, where, stats_.data());
}

absl::Status PassSession::CheckGradient(const v1::LayerChunk& chunk) const {
  const std::string field = absl::StrCat("layer[", chunk.layer(), "].gradient");
  if (chunk.has_gradient() != needs_gradient_) {
    return absl::InvalidArgumentError(
        needs_gradient_
            ? absl::StrCat(field, ": expected a gradient (an analysis is gradient-weighted), got none")
            : absl::StrCat(field, ": no analysis is gradient-weighted, but a gradient was sent"));
  }
  if (!needs_gradient_) return absl::OkStatus();
  const v1::Tensor& t = chunk.attention();
  const v1::Tensor& g = chunk.gradient();
  if (absl::Status s = CheckTensorBytes(g, field); !s.ok()) return s;
  if (!std::equal(g.shape().begin(), g.shape().end(), t.shape().begin(), t.shape().end())) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".shape: expected the attention's shape [", absl::StrJoin(t.shape(), ", "),
        "], got [", absl::StrJoin(g.shape(), ", "), "]"));
  }
  return absl::OkStatus();
}

namespace {

std::string ShapeString(const v1::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.shape(), ", "), "]");
}

}  // namespace

absl::Status PassSession::TakeResidualWeights(const v1::LayerChunk& chunk) {
  if (!chunk.has_residual_weights()) return absl::OkStatus();
  const std::string field = absl::StrCat("layer[", chunk.layer(), "].residual_weights");
  if (next_head_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": expected on the layer's first message (head_start 0), got head_start ", next_head_));
  }
  const v1::Tensor& w = chunk.residual_weights();
  if (absl::Status s = CheckTensorBytes(w, field); !s.ok()) return s;
  const bool per_token = w.shape_size() == 2;
  if (!(w.shape_size() == 1 || per_token) || w.shape(0) != batch_ ||
      (per_token && w.shape(1) != num_tokens_)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape: expected [", batch_, "] or [",
                                                   batch_, ", ", num_tokens_, "], got ",
                                                   ShapeString(w)));
  }
  const std::vector<float> values = DecodeAllValues(w);
  layer_residual_.assign(static_cast<size_t>(batch_) * num_tokens_, 0.0f);
  for (int b = 0; b < batch_; ++b) {
    for (int i = 0; i < valid_[b]; ++i) {
      const float a = per_token ? values[static_cast<size_t>(b) * num_tokens_ + i] : values[b];
      if (!(a >= 0.0f && a <= 1.0f)) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": expected weights in [0, 1], got ", a, " (sequence ", b,
            per_token ? absl::StrCat(", token ", i) : std::string(), ")"));
      }
      layer_residual_[static_cast<size_t>(b) * num_tokens_ + i] = a;
    }
  }
  return absl::OkStatus();
}

absl::Status PassSession::TakeValueNorms(const v1::LayerChunk& chunk) {
  const std::string field = absl::StrCat("layer[", chunk.layer(), "].value_norms");
  const bool first_message = next_layer_ == 0 && next_head_ == 0;
  if (first_message) value_norms_ = chunk.has_value_norms();
  if (chunk.has_value_norms() != value_norms_) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, value_norms_ ? ": expected value norms (the pass's first message had them), got none"
                            : ": the pass's first message had no value norms, so none may follow"));
  }
  if (!value_norms_) return absl::OkStatus();
  const v1::Tensor& v = chunk.value_norms();
  if (absl::Status s = CheckTensorBytes(v, field); !s.ok()) return s;
  const int64_t h = chunk.attention().shape(1);
  if (v.shape_size() != 3 || v.shape(0) != batch_ || v.shape(1) != h || v.shape(2) != num_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape: expected [", batch_, ", ", h, ", ",
                                                   num_tokens_, "], got ", ShapeString(v)));
  }
  norms_ = DecodeAllValues(v);
  for (int b = 0; b < batch_; ++b) {
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int j = 0; j < valid_[b]; ++j) {
        const float x = norms_[(b * h + hh) * num_tokens_ + j];
        if (!(x >= 0.0f && std::isfinite(x))) {
          return absl::InvalidArgumentError(absl::StrCat(
              field, ": expected finite norms >= 0, got ", x, " (sequence ", b, ", head ",
              next_head_ + hh, ", token ", j, ")"));
        }
      }
    }
  }
  return absl::OkStatus();
}

// The flow maps of sequence b: every (output token, input token) max flow,
// spread over the pool, stopping between max flows if the call is cancelled.
absl::StatusOr<analysis::Maps> PassSession::FlowMapsOf(Job& job, int index, int b,
                                                      const FinishContext& ctx) {
  const int m = valid_[b];
  const std::vector<analysis::MatrixF> layers = job.sequences[b].TakeLayers();
  std::vector<int> sinks;
  if (job.all_rows) {
    for (int i = 0; i < m; ++i) sinks.push_back(i);
  } else {
    sinks = analysis::ResolvedRows(job.spec.readout, m);
  }
  Eigen::MatrixXd flows(sinks.size(), m);
  const int64_t items = static_cast<int64_t>(sinks.size()) * m;
  std::atomic<int64_t> done{0};
  const int64_t step = std::max<int64_t>(1, (items + 99) / 100);  // at most ~100 reports
  absl::Mutex progress_mu;
  int64_t reported = 0;  // guarded by progress_mu: reports only move forward
  auto worker = [&](const ClaimFn& claim) {
    analysis::AttentionFlow solver(layers);
    int64_t item;
    while (claim(&item)) {
      const int r = static_cast<int>(item / m), source = static_cast<int>(item % m);
      flows(r, source) = solver.MaxFlow(source, sinks[r]);
      const int64_t now = done.fetch_add(1) + 1;
      if (ctx.progress && (now % step == 0 || now == items)) {
        absl::MutexLock lock(&progress_mu);
        if (now > reported) {
          reported = now;
          ctx.progress(index, now, items);
        }
      }
    }
  };
  if (ctx.pool != nullptr && ctx.helpers > 0) {
    ParallelFor(ctx.pool, ctx.helpers, items, ctx.cancelled, worker);
  } else {
    ParallelFor(nullptr, 0, items, ctx.cancelled, worker);
  }
  if (done.load() != items) {
    return absl::CancelledError(absl::StrCat("flow: cancelled after ", done.load(), " of ", items,
                                             " max flows"));
  }
  return analysis::FlowMaps(flows, job.raw, job.spec.readout);
}

absl::StatusOr<v1::ExplainResponse> PassSession::Finish(const FinishContext& ctx) {
  if (next_layer_ != num_layers_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: missing: the stream ended after ", next_layer_, " complete layers",
        next_head_ ? absl::StrCat(" and heads 0..", next_head_ - 1, " of layer ", next_layer_) : "",
        "; expected ", num_layers_, " layers of ", num_heads_, " heads"));
  }
  const absl::Time start = absl::Now();
  v1::ExplainResponse response;
  response.set_request_id(request_id_);
  response.set_server_version(ATTNROLL_VERSION);
  for (Job& job : jobs_) {
    v1::AnalysisResult* result = response.add_results();
    result->set_name(job.name);
    result->set_path(job.flow ? "flow" : analysis::RolloutPathName(job.path));
    if (job.all_rows) {
      for (int r = 0; r < valid_[0]; ++r) result->add_rows(r);
    } else if (!job.spec.readout.last_row) {
      for (int r : analysis::ResolvedRows(job.spec.readout, valid_[0])) result->add_rows(r);
    }
    if (job.spec.per_layer) {
      for (int l = job.spec.first_layer; l <= analysis::LastLayer(job.spec, num_layers_); ++l) {
        result->add_layers(l);
      }
    }
    for (size_t b = 0; b < job.sequences.size(); ++b) {
      analysis::SequenceRollout& seq = job.sequences[b];
      if (job.flow) {
        absl::StatusOr<analysis::Maps> maps =
            FlowMapsOf(job, static_cast<int>(&job - jobs_.data()), static_cast<int>(b), ctx);
        if (!maps.ok()) return maps.status();
        ToTensor(*maps, result->add_maps());
        continue;
      }
      const bool head_specific = job.spec.fusion == analysis::Fusion::kNone;
      analysis::Maps aggregate;
      ToTensor(seq.Finish(head_specific ? &aggregate : nullptr), result->add_maps());
      if (head_specific) ToTensor(aggregate, result->add_aggregate_maps());
      if (seq.emptied_rows() > 0) {
        result->add_warnings(absl::StrCat("sequence ", b, ": pruning emptied ", seq.emptied_rows(),
                                          " rows (summed over layers", head_specific ? " and heads" : "",
                                          "); each kept its diagonal"));
      }
    }
  }
  const absl::Time end = absl::Now();
  compute_ += end - start;
  response.mutable_timing()->set_total_seconds(absl::ToDoubleSeconds(end - started_));
  response.mutable_timing()->set_compute_seconds(absl::ToDoubleSeconds(compute_));
  return response;
}

}  // namespace attnroll::service
