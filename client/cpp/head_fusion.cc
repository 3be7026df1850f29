#include "client/cpp/head_fusion.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <new>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/cpp/layer_fusion.h"
#include "proto/cpp/client_fusion.h"

namespace attnroll::client {
namespace {

// The server's default tolerance for each wire dtype (PassHeader.row_sum_tolerance).
float DefaultTolerance(v1::DType wire) {
  switch (wire) {
    case v1::DTYPE_FP16: return 4e-3f;
    case v1::DTYPE_BF16: return 2e-2f;
    default: return 1e-3f;
  }
}

// The exact check of one valid row (cols = the sequence's valid length), in
// the server's words.
absl::Status CheckRow(const float* row, int cols, int i, int64_t layer, int64_t head, int64_t b,
                      const HeadChecks& c) {
  auto where = [&] {
    return absl::StrCat("attention (layer ", layer, ", head ", head, ", sequence ", b, ", row ", i, ")");
  };
  const char* found = ", found by the client while fusing heads";
  double sum = 0;
  for (int j = 0; j < cols; ++j) {
    const float v = row[j];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), ": expected finite values, got ", v, " at column ", j, found));
    }
    if (v < 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), ": expected probabilities >= 0, got ", v, " at column ", j, found));
    }
    if (c.causal && j > i && v > c.tolerance) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), ": causal layout expects no attention above the diagonal, got ", v, " at column ",
          j, found));
    }
    sum += v;
  }
  if (std::abs(sum - 1.0) > c.tolerance) {
    return absl::InvalidArgumentError(absl::StrCat(where(), ": expected the row over the ", cols,
                                                   " valid tokens to sum to 1 +- ", c.tolerance,
                                                   ", got ", sum, found));
  }
  return absl::OkStatus();
}

}  // namespace

HeadChecks ChecksFor(const v1::PassHeader& header, v1::DType wire) {
  HeadChecks c;
  c.tolerance = header.row_sum_tolerance() > 0 ? header.row_sum_tolerance() : DefaultTolerance(wire);
  c.causal = header.layout().causal();
  c.valid.assign(header.layout().valid_lengths().begin(), header.layout().valid_lengths().end());
  return c;
}

absl::StatusOr<FusedAttention> FuseHeads(const AttentionView& a, const std::vector<float>& weights,
                                         const HeadChecks* checks, int threads) {
  double sum = 0;
  for (float w : weights) sum += w;
  std::vector<float> scale(weights.size());
  for (size_t h = 0; h < weights.size(); ++h) scale[h] = static_cast<float>(weights[h] / sum);
  const bool equal = std::all_of(weights.begin(), weights.end(),
                                 [&](float w) { return w == weights.front(); });
  const int64_t rows = a.rows(), n = a.tokens, elems = rows * n;
  FusedAttention out;
  out.data.resize(static_cast<size_t>(a.batch * a.layers * elems));
  // Fuses (and checks) unit u = b * L + l, the layer l of sequence b.
  auto fuse_unit = [&](int64_t u, std::vector<analysis::RowStats>& stats) -> absl::Status {
    const int64_t b = u / a.layers, l = u % a.layers;
    // Only the valid block is checked: padding is never read by the server.
    const int m = checks == nullptr || checks->valid.empty() || b >= static_cast<int64_t>(checks->valid.size())
                      ? static_cast<int>(n)
                      : std::clamp(checks->valid[b], 1, static_cast<int>(n));
    LayerFusion f;
    f.heads = a.data + u * a.heads * elems;
    f.num_heads = static_cast<int>(a.heads);
    f.rows = static_cast<int>(rows);
    f.n = static_cast<int>(n);
    f.valid = m;
    f.scale = equal ? nullptr : scale.data();
    f.mean_scale = scale.front();
    f.causal = checks != nullptr && checks->causal;
    f.out = out.data.data() + u * elems;
    const int measured = MeasuredRows(f);
    stats.resize(static_cast<size_t>(a.heads) * measured);
    FuseLayer(f, stats.data());
    if (checks == nullptr) return absl::OkStatus();
    // In head order, then row order: the first row the exact check refuses.
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int i = 0; i < measured; ++i) {
        if (analysis::PassesFastCheck(stats[h * measured + i], checks->tolerance, checks->causal)) continue;
        if (absl::Status st = CheckRow(f.heads + h * elems + i * n, m, i, l, h, b, *checks); !st.ok()) {
          return st;
        }
      }
    }
    return absl::OkStatus();
  };
  // The threads claim units in order from one counter; a thread stops at its
  // first refused unit, and units after the first refused one are skipped.
  // Every unit before it was claimed, and is finished by its claimer, so the
  // error returned is the first in (sequence, layer) order, as on one thread.
  const int64_t units = a.batch * a.layers;
  std::atomic<int64_t> next{0}, first_bad{units};
  std::vector<absl::Status> refused(static_cast<size_t>(units));
  auto work = [&] {
    std::vector<analysis::RowStats> stats;
    for (int64_t u = next++; u < units && u < first_bad.load(); u = next++) {
      absl::Status st;
      try {
        st = fuse_unit(u, stats);
      } catch (const std::bad_alloc&) {  // a helper thread must not end the process
        st = absl::ResourceExhaustedError("fusing heads on the client: out of memory");
      }
      if (st.ok()) continue;
      refused[u] = std::move(st);
      for (int64_t seen = first_bad.load(); u < seen && !first_bad.compare_exchange_weak(seen, u);) {
      }
      return;
    }
  };
  const int64_t bytes = units * a.heads * elems * static_cast<int64_t>(sizeof(float));
  std::vector<std::thread> helpers;
  if (bytes >= kParallelFusionBytes) {
    const int64_t extra = std::min<int64_t>(threads, units) - 1;
    try {
      for (int64_t t = 0; t < extra; ++t) helpers.emplace_back(work);
    } catch (const std::system_error&) {
      // No thread to be had (a pid limit): the threads started share the work.
    }
  }
  work();
  for (std::thread& t : helpers) t.join();
  if (first_bad.load() < units) return refused[first_bad.load()];
  out.view = a;
  out.view.heads = 1;
  out.view.data = out.data.data();
  return out;
}

absl::StatusOr<std::vector<FusedAttention>> MaybeFuseHeads(
    v1::PassHeader* header, std::initializer_list<const AttentionView*> views, ClientFusion mode,
    v1::DType wire, int threads) {
  std::vector<FusedAttention> fused;
  if (mode == ClientFusion::kOff || header->layout().heads_fused_by_client() || views.size() == 0) {
    return fused;
  }
  const AttentionView& first = **views.begin();
  if (mode == ClientFusion::kAuto && first.heads <= 1) return fused;
  absl::StatusOr<std::vector<float>> weights = v1::ClientFusionWeights(*header);
  for (const AttentionView* v : views) {
    if (v->value_norms != nullptr) {
      weights = absl::InvalidArgumentError(
          "value_norms: fusing heads on the client needs no value norms (they scale each head)");
    } else if (v->gradient != nullptr) {
      weights = absl::InvalidArgumentError(
          "gradient: fusing heads on the client needs no gradient (the rule weights each head)");
    }
  }
  if (!weights.ok()) {
    if (mode == ClientFusion::kAuto) return fused;
    return absl::InvalidArgumentError(
        absl::StrCat("cannot fuse heads on the client: ", weights.status().message()));
  }
  if (static_cast<int64_t>(weights->size()) != first.heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout.num_heads: expected the attention's ", first.heads, " heads, got ", weights->size()));
  }
  const HeadChecks checks = ChecksFor(*header, wire);
  for (const AttentionView* v : views) {
    absl::StatusOr<FusedAttention> f = FuseHeads(*v, *weights, &checks, threads);
    if (!f.ok()) return f.status();
    fused.push_back(*std::move(f));
  }
  header->mutable_layout()->set_heads_fused_by_client(true);
  return fused;
}

}  // namespace attnroll::client
