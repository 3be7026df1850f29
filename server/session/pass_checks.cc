#include "server/session/pass_checks.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/session/attention_decode.h"
#include "server/runtime/refusal.h"

namespace attnroll::session {

absl::StatusOr<float> RowSumTolerance(const v1::PassHeader& header) {
  const float tol = header.row_sum_tolerance();
  if (!(std::isfinite(tol) && tol >= 0.0f && tol < 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.row_sum_tolerance: expected 0 <= tolerance < 1, got ", tol));
  }
  return tol;
}

absl::Status CheckPassFits(uint64_t values, int64_t max_pass_bytes, absl::string_view shape) {
  const uint64_t min_bytes = values * 2;
  if (min_bytes > static_cast<uint64_t>(max_pass_bytes)) {
    return runtime::Refused(runtime::Refusal::kLimits, absl::StrCat(
        "layout: a pass of ", shape, " attention values is at least ", min_bytes,
        " bytes, over the server's max_pass_bytes of ", max_pass_bytes));
  }
  return absl::OkStatus();
}

absl::Status CheckAttentionTensor(const v1::Tensor& t, absl::string_view field, int batch,
                                  int next_head, int num_heads, int rows, int cols) {
  if (absl::Status s = CheckTensorBytes(t, field); !s.ok()) return s;
  const int64_t heads_left = num_heads - next_head;
  if (t.shape_size() != 4 || t.shape(0) != batch || t.shape(1) < 1 || t.shape(1) > heads_left ||
      t.shape(2) != rows || t.shape(3) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".shape: expected [", batch, ", h, ", rows, ", ", cols, "] with 1 <= h <= ",
        heads_left, " (heads ", next_head, "..", num_heads - 1, " of the layer remain), got [",
        absl::StrJoin(t.shape(), ", "), "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckGradientTensor(const v1::LayerChunk& chunk, absl::string_view field, bool needed,
                                 absl::string_view why) {
  if (chunk.has_gradient() != needed) {
    return absl::InvalidArgumentError(
        needed ? absl::StrCat(field, ": expected a gradient (", why, "), got none")
               : absl::StrCat(field, ": no analysis is gradient-weighted, but a gradient was sent"));
  }
  if (!needed) return absl::OkStatus();
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

absl::StatusOr<std::vector<float>> ResidualWeightsOf(const v1::Tensor& w, absl::string_view field,
                                                     int batch, int n, const std::vector<int>& valid,
                                                     int head_start) {
  if (head_start != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": expected on the layer's first message (head_start 0), got head_start ", head_start));
  }
  if (absl::Status s = CheckTensorBytes(w, field); !s.ok()) return s;
  const bool per_token = w.shape_size() == 2;
  if (!(w.shape_size() == 1 || per_token) || w.shape(0) != batch || (per_token && w.shape(1) != n)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape: expected [", batch, "] or [", batch,
                                                   ", ", n, "], got [", absl::StrJoin(w.shape(), ", "),
                                                   "]"));
  }
  const std::vector<float> values = DecodeAllValues(w);
  std::vector<float> out(static_cast<size_t>(batch) * n, 0.0f);
  for (int b = 0; b < batch; ++b) {
    for (int i = 0; i < valid[b]; ++i) {
      const float a = per_token ? values[static_cast<size_t>(b) * n + i] : values[b];
      if (!(a >= 0.0f && a <= 1.0f)) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": expected weights in [0, 1], got ", a, " (sequence ", b,
            per_token ? absl::StrCat(", token ", i) : std::string(), ")"));
      }
      out[static_cast<size_t>(b) * n + i] = a;
    }
  }
  return out;
}

absl::StatusOr<std::vector<float>> ValueNormsOf(const v1::Tensor& v, absl::string_view field,
                                                int batch, int heads, int head0, int n,
                                                const std::vector<int>& valid) {
  if (absl::Status s = CheckTensorBytes(v, field); !s.ok()) return s;
  if (v.shape_size() != 3 || v.shape(0) != batch || v.shape(1) != heads || v.shape(2) != n) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape: expected [", batch, ", ", heads, ", ",
                                                   n, "], got [", absl::StrJoin(v.shape(), ", "), "]"));
  }
  std::vector<float> norms = DecodeAllValues(v);
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      for (int j = 0; j < valid[b]; ++j) {
        const float x = norms[(static_cast<size_t>(b) * heads + h) * n + j];
        if (!(x >= 0.0f && std::isfinite(x))) {
          return absl::InvalidArgumentError(absl::StrCat(
              field, ": expected finite norms >= 0, got ", x, " (sequence ", b, ", head ", head0 + h,
              ", token ", j, ")"));
        }
      }
    }
  }
  return norms;
}

absl::Status PassBytes::Add(const v1::LayerChunk& chunk) {
  received_ += static_cast<int64_t>(chunk.attention().data().size() + chunk.gradient().data().size());
  if (received_ > limit_) {
    return runtime::Refused(runtime::Refusal::kLimits, absl::StrCat(
        "pass: ", received_, " attention bytes exceed the server's max_pass_bytes of ", limit_));
  }
  return absl::OkStatus();
}

}  // namespace attnroll::session
