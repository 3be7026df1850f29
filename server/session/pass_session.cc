#include "server/session/pass_session.h"

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
#include "server/runtime/parallel_for.h"
#include "server/session/attention_decode.h"
#include "server/session/degenerate_results.h"
#include "server/session/result_tensors.h"

namespace attnroll::session {
namespace {

// Floats in one decoded strip of rows (256 KiB: fits in L2 with its fused strip).
constexpr int kStripFloats = 64 * 1024;
// Floats of the fused matrix in one strip of the wire path (64 KiB): its
// rows stay in cache while every group of heads is added to them.
constexpr int kWireStripFloats = 16 * 1024;

// A message at least this large may be shared with idle workers.
constexpr size_t kParallelBytes = size_t{4} << 20;

int WireStripRows(int m) { return std::max(1, std::min(m, kWireStripFloats / m)); }
// The most rows a strip has, whatever m: min(m, F / m) <= sqrt(F).
constexpr int kMaxWireStripRows = 128;
static_assert(kMaxWireStripRows * kMaxWireStripRows >= kWireStripFloats);

}  // namespace

int64_t PassSession::ScratchBytes(const PassPlan& plan) {
  // block_ and gblock_, value norms and residual weights of one message, stats_.
  const int64_t n = plan.num_tokens;
  return (2 * std::max<int64_t>(kStripFloats, n) + static_cast<int64_t>(plan.batch) * (plan.num_heads + 1) * n) *
             static_cast<int64_t>(sizeof(float)) +
         n * static_cast<int64_t>(sizeof(analysis::RowStats));
}

PassSession::PassSession(PassPlan plan)
    : plan_(std::move(plan)),
      num_layers_(plan_.num_layers),
      num_heads_(plan_.num_heads),
      num_tokens_(plan_.num_tokens),
      batch_(plan_.batch),
      valid_(plan_.valid),
      bytes_(plan_.max_pass_bytes) {
  if (plan_.needs_gradient) {
    gradient_nonzero_.assign(batch_, std::vector<bool>(num_layers_, false));
  }
  for (const AnalysisPlan& a : plan_.analyses) {
    Job& job = jobs_.emplace_back(Job{a, {}});
    if (a.validate_only) continue;  // nothing to compute
    for (int b = 0; b < batch_; ++b) {
      job.sequences.emplace_back(a.spec, num_layers_, num_heads_, valid_[b], a.path, /*keep_layers=*/a.flow);
    }
  }
}

const char* PassSession::kind() const {
  const AnalysisPlan& first = plan_.analyses.front();
  if (first.validate_only) return "validate";
  if (first.flow) return "flow";
  return first.spec.gradient == analysis::GradientRule::kNone ? "rollout" : "grad-rollout";
}

bool PassSession::long_finish() const {
  for (const AnalysisPlan& a : plan_.analyses) {
    if (a.flow) return true;
  }
  return false;
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
  const std::string field = absl::StrCat("layer[", chunk.layer(), "]");
  if (!chunk.has_attention()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".attention: expected a tensor, got none"));
  }
  const v1::Tensor& t = chunk.attention();
  for (absl::Status s :
       {CheckAttentionTensor(t, field + ".attention", batch_, next_head_, num_heads_, num_tokens_,
                             num_tokens_),
        CheckGradientTensor(chunk, field + ".gradient", plan_.needs_gradient,
                            "an analysis is gradient-weighted")}) {
    if (!s.ok()) return s;
  }
  if (absl::Status s = TakeResidualWeights(chunk); !s.ok()) return s;
  if (absl::Status s = TakeValueNorms(chunk); !s.ok()) return s;
  if (absl::Status s = bytes_.Add(chunk); !s.ok()) return s;
  const int h = static_cast<int>(t.shape(1));
  const bool ends_layer = next_head_ + h == num_heads_;
  const bool wire = WirePath();
  if (wire) {
    if (absl::Status s = AddWireChunk(chunk, ends_layer); !s.ok()) return s;
  }
  if (block_.empty() && !wire) block_.resize(std::max<size_t>(kStripFloats, num_tokens_));
  if (plan_.needs_gradient && gblock_.empty()) gblock_.resize(block_.size());
  if (!wire && stats_.size() < static_cast<size_t>(num_tokens_)) stats_.resize(num_tokens_);
  for (int b = 0; b < batch_ && !wire; ++b) {
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
  if (ends_layer) {
    for (Job& job : jobs_) {
      for (int b = 0; b < static_cast<int>(job.sequences.size()); ++b) {
        job.sequences[b].EndLayer(
            next_layer_, layer_residual_.empty() ? nullptr : layer_residual_.data() + b * num_tokens_,
            /*rows_ended=*/wire);
      }
    }
    layer_residual_.clear();
  }
  next_head_ += h;
  if (next_head_ == num_heads_) {
    next_head_ = 0;
    ++next_layer_;
  }
  timing_.AddCompute(start);
  return absl::OkStatus();
}

bool PassSession::WirePath() const {
  if (plan_.needs_gradient || value_norms_) return false;
  for (const Job& job : jobs_) {
    for (const analysis::SequenceRollout& seq : job.sequences) {
      if (!seq.wire_path()) return false;
    }
  }
  return true;
}

// Every strip of every sequence of the message, in order. A large message
// may be shared with idle workers: a sequence's strips are independent (each
// touches its own rows) once its first strip, which allocates the layer's
// matrices, is in. The error reported is the first one in order, as without
// helpers.
absl::Status PassSession::AddWireChunk(const v1::LayerChunk& chunk, bool ends_layer) {
  const size_t stats_size = static_cast<size_t>(analysis::kMaxFuseGroup) * kMaxWireStripRows;
  if (stats_.size() < stats_size) stats_.resize(stats_size);
  const bool parallel =
      pool_ != nullptr && helpers_ > 0 && chunk.attention().data().size() >= kParallelBytes;
  for (int b = 0; b < batch_; ++b) {
    const int m = valid_[b], strip = WireStripRows(m);
    const int64_t strips = (m + strip - 1) / strip;
    auto run = [&](int64_t i, analysis::RowStats* stats) {
      const int r0 = static_cast<int>(i) * strip;
      return AddWireStrip(chunk, b, r0, std::min(strip, m - r0), ends_layer, stats);
    };
    if (absl::Status s = run(0, stats_.data()); !s.ok()) return s;
    if (!parallel || strips < 3) {
      for (int64_t i = 1; i < strips; ++i) {
        if (absl::Status s = run(i, stats_.data()); !s.ok()) return s;
      }
      continue;
    }
    std::vector<absl::Status> status(strips);
    // Strips after a failed one are skipped; those before it still run, so
    // the first failure in order is the one reported.
    std::atomic<int64_t> first_failed{strips};
    runtime::ParallelFor(pool_, helpers_, strips - 1, {}, [&](const runtime::ClaimFn& claim) {
      std::vector<analysis::RowStats> stats(stats_size);
      int64_t k;
      while (claim(&k)) {
        const int64_t i = k + 1;
        if (i > first_failed.load()) continue;
        status[i] = run(i, stats.data());
        if (status[i].ok()) continue;
        int64_t seen = first_failed.load();
        while (i < seen && !first_failed.compare_exchange_weak(seen, i)) {
        }
      }
    });
    for (const absl::Status& s : status) {
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

// Rows [r0, r0 + rows) of every head of the chunk, sequence b, straight
// from the received bytes: a group of heads at a time is measured (the
// first analysis that fuses it measures it as it reads) and added to every
// analysis, then validated; once the layer's last head is in, the rows are
// finished (residual, renormalisation) while they are in cache.
absl::Status PassSession::AddWireStrip(const v1::LayerChunk& chunk, int b, int r0, int rows,
                                       bool ends_layer, analysis::RowStats* stats_buffer) {
  const v1::Tensor& t = chunk.attention();
  const int h = static_cast<int>(t.shape(1));
  const int m = valid_[b];
  const int64_t n = num_tokens_;
  const int64_t size = static_cast<int64_t>(DTypeSize(t.dtype()));
  const analysis::WireType type = WireTypeOf(t.dtype());
  const float tol = plan_.tolerance > 0 ? plan_.tolerance : DefaultRowSumTolerance(t.dtype());
  const int stride = rows;  // of the stats: head g, row r at stats_[g * rows + r]
  analysis::WireRows in[analysis::kMaxFuseGroup];
  for (int g0 = 0; g0 < h; g0 += analysis::kMaxFuseGroup) {
    const int count = std::min(analysis::kMaxFuseGroup, h - g0);
    for (int g = 0; g < count; ++g) {
      in[g].data = t.data().data() + size * (((static_cast<int64_t>(b) * h + g0 + g) * n + r0) * n);
      in[g].stride = n;
    }
    analysis::RowStats* stats = stats_buffer;
    bool measured = false;
    for (Job& job : jobs_) {
      if (job.plan.validate_only) continue;
      if (job.sequences[b].AddWireHeads(next_layer_, next_head_ + g0, count, type, in, r0, rows,
                                        measured ? nullptr : stats, stride)) {
        measured = true;
      }
    }
    if (!measured) {  // no analysis read these rows in full: measure them alone
      analysis::FuseTask task;
      task.type = type;
      task.heads = count;
      task.in = in;
      task.rows = rows;
      task.cols = m;
      task.row0 = r0;
      task.op = analysis::FuseOp::kStatsOnly;
      task.causal = plan_.causal;
      task.stats = stats;
      task.stats_stride = stride;
      analysis::FuseRows(task);
    }
    for (int g = 0; g < count; ++g) {
      const BlockLocation where{next_layer_, next_head_ + g0 + g, b};
      if (absl::Status s = ValidateWireRows(t.dtype(), static_cast<const char*>(in[g].data), n, rows, m,
                                            r0, tol, plan_.causal, where, stats + g * stride);
          !s.ok()) {
        return s;
      }
    }
  }
  if (ends_layer) {
    const float* weights = layer_residual_.empty() ? nullptr : layer_residual_.data() + b * n;
    for (Job& job : jobs_) {
      if (!job.plan.validate_only) job.sequences[b].EndRows(next_layer_, r0, rows, weights);
    }
  }
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
  const float tol = plan_.tolerance > 0 ? plan_.tolerance : DefaultRowSumTolerance(t.dtype());
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
  if (plan_.needs_gradient) {
    const float* gptr = reinterpret_cast<const float*>(g.data().data()) + offset;
    int64_t gstride = n;
    if (g.dtype() != v1::DTYPE_FP32) {
      DecodeBlock(g.dtype(), g.data(), offset, rows, m, n, gblock_.data());
      gptr = gblock_.data();
      gstride = m;
    }
    if (absl::Status s = ValidateGradientRows(gptr, rows, m, gstride, r0, where); !s.ok()) return s;
    gview.emplace(gptr, rows, m, Eigen::OuterStride<>(gstride));
    if (!gradient_nonzero_[b][next_layer_] && !gview->isZero(0.0f)) gradient_nonzero_[b][next_layer_] = true;
  }
  analysis::RowStats* stats = stats_.data();
  if (value_norms_) {
    // Validate the attention as sent, then weight its columns by the norms.
    analysis::ComputeRowStats(view, r0, plan_.causal, stats);
    if (absl::Status s = ValidateAttentionRows(rows_ptr, rows, m, stride, r0, tol, plan_.causal, where, stats);
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
    if (job.plan.validate_only) continue;
    if (job.sequences[b].AddHeadRows(next_layer_, head, r0, view, gview ? &*gview : nullptr, stats,
                                     plan_.causal)) {
      stats = nullptr;
    }
  }
  if (value_norms_) return absl::OkStatus();
  if (stats != nullptr) analysis::ComputeRowStats(view, r0, plan_.causal, stats);
  return ValidateAttentionRows(rows_ptr, rows, m, stride, r0, tol, plan_.causal, where, stats_.data());
}

absl::Status PassSession::TakeResidualWeights(const v1::LayerChunk& chunk) {
  if (!chunk.has_residual_weights()) return absl::OkStatus();
  absl::StatusOr<std::vector<float>> w =
      ResidualWeightsOf(chunk.residual_weights(), absl::StrCat("layer[", chunk.layer(), "].residual_weights"),
                        batch_, num_tokens_, valid_, next_head_);
  if (!w.ok()) return w.status();
  layer_residual_ = *std::move(w);
  return absl::OkStatus();
}

absl::Status PassSession::TakeValueNorms(const v1::LayerChunk& chunk) {
  const std::string field = absl::StrCat("layer[", chunk.layer(), "].value_norms");
  const bool first_message = next_layer_ == 0 && next_head_ == 0;
  if (plan_.heads_fused_by_client && chunk.has_value_norms()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": not accepted with layout.heads_fused_by_client (value norms scale each head "
               "before fusion; send the heads)"));
  }
  if (first_message) value_norms_ = chunk.has_value_norms();
  if (chunk.has_value_norms() != value_norms_) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, value_norms_ ? ": expected value norms (the pass's first message had them), got none"
                            : ": the pass's first message had no value norms, so none may follow"));
  }
  if (!value_norms_) return absl::OkStatus();
  absl::StatusOr<std::vector<float>> norms =
      ValueNormsOf(chunk.value_norms(), field, batch_, static_cast<int>(chunk.attention().shape(1)),
                   next_head_, num_tokens_, valid_);
  if (!norms.ok()) return norms.status();
  norms_ = *std::move(norms);
  return absl::OkStatus();
}

// The flow maps of sequence b: every (output token, input token) max flow,
// spread over the pool, stopping between max flows if the call is cancelled.
absl::StatusOr<analysis::Maps> PassSession::FlowMapsOf(Job& job, int index, int b,
                                                      const FinishContext& ctx) {
  const int m = valid_[b];
  const std::vector<analysis::MatrixF> layers = job.sequences[b].TakeLayers();
  std::vector<int> sinks;
  if (job.plan.all_rows) {
    for (int i = 0; i < m; ++i) sinks.push_back(i);
  } else {
    sinks = analysis::ResolvedRows(job.plan.spec.readout, m);
  }
  Eigen::MatrixXd flows(sinks.size(), m);
  const int64_t items = static_cast<int64_t>(sinks.size()) * m;
  std::atomic<int64_t> done{0};
  const int64_t step = std::max<int64_t>(1, (items + 99) / 100);  // at most ~100 reports
  absl::Mutex progress_mu;
  int64_t reported = 0;  // guarded by progress_mu: reports only move forward
  auto worker = [&](const runtime::ClaimFn& claim) {
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
    runtime::ParallelFor(ctx.pool, ctx.helpers, items, ctx.cancelled, worker);
  } else {
    runtime::ParallelFor(nullptr, 0, items, ctx.cancelled, worker);
  }
  if (done.load() != items) {
    return absl::CancelledError(absl::StrCat("flow: cancelled after ", done.load(), " of ", items,
                                             " max flows"));
  }
  return analysis::FlowMaps(flows, job.plan.raw, job.plan.spec.readout);
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
  response.set_request_id(plan_.request_id);
  response.set_server_version(ATTNROLL_VERSION);
  response.set_heads_fused_by_client(plan_.heads_fused_by_client);
  for (Job& job : jobs_) {
    v1::AnalysisResult* result = response.add_results();
    result->set_name(job.plan.name);
    if (job.plan.validate_only) {
      result->set_path("validate");
      continue;
    }
    result->set_path(job.plan.flow ? "flow" : analysis::RolloutPathName(job.plan.path));
    if (job.plan.all_rows) {
      for (int r = 0; r < valid_[0]; ++r) result->add_rows(r);
    } else if (!job.plan.spec.readout.last_row) {
      for (int r : analysis::ResolvedRows(job.plan.spec.readout, valid_[0])) result->add_rows(r);
    }
    if (job.plan.spec.per_layer) {
      for (int l = job.plan.spec.first_layer; l <= analysis::LastLayer(job.plan.spec, num_layers_); ++l) {
        result->add_layers(l);
      }
    }
    for (size_t b = 0; b < job.sequences.size(); ++b) {
      analysis::SequenceRollout& seq = job.sequences[b];
      if (job.plan.flow) {
        absl::StatusOr<analysis::Maps> maps =
            FlowMapsOf(job, static_cast<int>(&job - jobs_.data()), static_cast<int>(b), ctx);
        if (!maps.ok()) return maps.status();
        // A map of an output token no flow reaches has no mass.
        Degenerate d;
        const size_t len = static_cast<size_t>(valid_[b] - job.plan.spec.readout.prefix);
        d.maps = static_cast<int64_t>(maps->values.size() / len);
        for (size_t k = 0; k < static_cast<size_t>(d.maps); ++k) {
          double mass = 0;
          for (size_t j = 0; j < len; ++j) mass += maps->values[k * len + j];
          d.zero_maps += mass <= 0.0;
        }
        for (const std::string& w : DegenerateMessages(static_cast<int>(b), d)) result->add_warnings(w);
        ToTensor(*maps, result->add_maps());
        continue;
      }
      const bool head_specific = job.plan.spec.fusion == analysis::Fusion::kNone;
      analysis::Maps aggregate;
      ToTensor(seq.Finish(head_specific ? &aggregate : nullptr), result->add_maps());
      if (head_specific) ToTensor(aggregate, result->add_aggregate_maps());
      if (seq.emptied_rows() > 0) {
        result->add_warnings(absl::StrCat("sequence ", b, ": pruning emptied ", seq.emptied_rows(),
                                          " rows (summed over layers", head_specific ? " and heads" : "",
                                          "); each kept its diagonal"));
      }
      Degenerate d;
      if (job.plan.spec.gradient != analysis::GradientRule::kNone) {
        for (int l = job.plan.spec.first_layer; l <= analysis::LastLayer(job.plan.spec, num_layers_); ++l) {
          if (!gradient_nonzero_[b][l]) d.zero_gradient_layers.push_back(l);
        }
      }
      d.zero_layers = seq.zero_layers();
      d.zero_maps = seq.zero_maps();
      // Every map holds the m - P values of one read-out row.
      d.maps = static_cast<int64_t>(result->maps(result->maps_size() - 1).data().size() / sizeof(float)) /
               (valid_[b] - job.plan.spec.readout.prefix);
      for (const std::string& w : DegenerateMessages(static_cast<int>(b), d)) {
        if (job.plan.fail_on_degenerate) {
          return absl::InvalidArgumentError(absl::StrCat(
              "analyses[", &job - jobs_.data(), "] (fail_on_degenerate): ", w));
        }
        result->add_warnings(w);
      }
    }
  }
  timing_.Stamp(start, response.mutable_timing());
  return response;
}

}  // namespace attnroll::session
