#include "server/session/compare_request.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/runtime/refusal.h"
#include "server/analysis/compare.h"
#include "server/session/attention_decode.h"
#include "server/session/field_status.h"
#include "server/session/result_tensors.h"

namespace attnroll::session {
namespace {

struct Layout {
  int64_t maps = 0;     // k
  int64_t length = 0;   // n per map
  std::vector<int64_t> map_shape;
  analysis::CompareSpec spec;
};

absl::StatusOr<Layout> Resolve(const v1::CompareRequest& r, const runtime::PassLimits& limits) {
  if (absl::Status s = CheckTensorBytes(r.a(), "a"); !s.ok()) return s;
  if (absl::Status s = CheckTensorBytes(r.b(), "b"); !s.ok()) return s;
  const auto& sa = r.a().shape();
  const auto& sb = r.b().shape();
  if (!std::equal(sa.begin(), sa.end(), sb.begin(), sb.end())) {
    return absl::InvalidArgumentError(absl::StrCat("b.shape: expected a's shape [",
                                                   absl::StrJoin(sa, ", "), "], got [",
                                                   absl::StrJoin(sb, ", "), "]"));
  }
  if (sa.size() < 1 || sa.size() > 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a.shape: expected [n], [k, n], [h, w] (with a grid) or [k, h, w], got [",
        absl::StrJoin(sa, ", "), "]"));
  }
  int64_t count = 1;
  for (int64_t d : sa) count *= d;
  if (count == 0) return absl::InvalidArgumentError("a: expected at least one value, got none");
  if (count > int64_t{limits.max_tokens} * limits.max_tokens) {
    return runtime::Refused(runtime::Refusal::kLimits, absl::StrCat(
        "a: ", count, " values exceed the server limit of max_tokens^2 = ",
        int64_t{limits.max_tokens} * limits.max_tokens));
  }
  Layout out;
  const v1::CompareOptions& o = r.options();
  int64_t h = o.grid_height(), w = o.grid_width();
  if ((h == 0) != (w == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.grid: height and width must both be set, got ", h, "x", w));
  }
  if (h == 0 && sa.size() == 3) {
    h = sa[1];
    w = sa[2];
  }
  if (h > 0) {
    // Each side of an options grid is below 2^32: the cell count fits in 64
    // unsigned bits, not always in 64 signed ones.
    const uint64_t cells = static_cast<uint64_t>(h) * static_cast<uint64_t>(w);
    if (cells > static_cast<uint64_t>(count) || count % static_cast<int64_t>(cells) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options.grid: ", h, "x", w, " does not divide the ", count, " values of a [",
          absl::StrJoin(sa, ", "), "]"));
    }
    out.length = h * w;
    out.map_shape = {h, w};
    out.spec.grid_h = static_cast<int>(h);
    out.spec.grid_w = static_cast<int>(w);
  } else {
    out.length = sa[sa.size() - 1];
    out.map_shape = {out.length};
  }
  out.maps = count / out.length;
  const int grid_h = out.spec.grid_h, grid_w = out.spec.grid_w;
  absl::StatusOr<analysis::CompareSpec> spec = ToCompareSpec(o, out.length);
  if (!spec.ok()) return spec.status();
  out.spec = *std::move(spec);
  out.spec.grid_h = grid_h;  // a [k, h, w] tensor's grid when the options give none
  out.spec.grid_w = grid_w;
  if (absl::Status s = CheckCompareCost(out.maps, out.length, out.spec, limits); !s.ok()) return s;
  return out;
}

void Set(const std::optional<double>& v, const std::string& note, v1::MaybeValue* out) {
  out->set_defined(v.has_value());
  if (v.has_value()) out->set_value(*v);
  out->set_note(note);
}

}  // namespace

absl::StatusOr<int64_t> CompareWorkingBytes(const v1::CompareRequest& request,
                                            const runtime::PassLimits& limits) {
  absl::StatusOr<Layout> layout = Resolve(request, limits);
  if (!layout.ok()) return layout.status();
  // Decoded a and b, the difference maps, and one CompareMaps at a time.
  return 3 * layout->maps * layout->length * static_cast<int64_t>(sizeof(float)) +
         analysis::CompareWorkingBytes(layout->length, layout->spec);
}

absl::Status CheckCompareCost(int64_t maps, int64_t length, const analysis::CompareSpec& spec,
                              const runtime::PassLimits& limits) {
  const double cost = static_cast<double>(maps) * analysis::CompareCost(length, spec);
  if (cost > limits.max_compare_cost) {
    return runtime::Refused(
        runtime::Refusal::kLimits,
        absl::StrFormat("compare: %d comparisons of %d-value maps are estimated at %.3g work units "
                        "(~%.3g core-seconds), over the server's max_compare_cost of %.3g; send "
                        "fewer or smaller maps, or a smaller ssim_window",
                        maps, length, cost, cost * 1e-9, limits.max_compare_cost));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CompareResponse> RunCompare(const v1::CompareRequest& request,
                                               const runtime::PassLimits& limits,
                                               const std::function<bool()>& cancelled) {
  absl::StatusOr<Layout> layout = Resolve(request, limits);
  if (!layout.ok()) return layout.status();
  const std::vector<float> a = DecodeAllValues(request.a());
  const std::vector<float> b = DecodeAllValues(request.b());
  v1::CompareResponse response;
  response.set_server_version(ATTNROLL_VERSION);
  const int64_t n = layout->length;
  for (int64_t k = 0; k < layout->maps; ++k) {
    absl::StatusOr<analysis::Comparison> c = analysis::CompareMaps(
        absl::MakeConstSpan(a.data() + k * n, n), absl::MakeConstSpan(b.data() + k * n, n),
        layout->spec, cancelled);
    if (!c.ok()) {
      return layout->maps > 1 ? At(absl::StrCat("map ", k), c.status()) : c.status();
    }
    ToProto(*c, layout->map_shape, /*with_difference=*/true, response.add_comparisons());
  }
  return response;
}

absl::StatusOr<analysis::CompareSpec> ToCompareSpec(const v1::CompareOptions& o, int64_t length) {
  analysis::CompareSpec spec;
  if (o.grid_height() != 0 && uint64_t{o.grid_height()} * o.grid_width() == static_cast<uint64_t>(length)) {
    spec.grid_h = static_cast<int>(o.grid_height());
    spec.grid_w = static_cast<int>(o.grid_width());
  } else if (o.grid_height() != 0 || o.grid_width() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("options.grid: ", o.grid_height(), "x",
                                                   o.grid_width(), " cells, expected ", length,
                                                   " (the map length)"));
  }
  spec.top_k = static_cast<int>(std::min<uint32_t>(o.top_k(), INT32_MAX));
  spec.top_mass = o.top_mass();
  if (o.ssim_window() != 0) spec.ssim_window = static_cast<int>(std::min<uint32_t>(o.ssim_window(), 1 << 20));
  if (o.has_region()) {
    if (absl::Status s = CheckTensorBytes(o.region(), "options.region"); !s.ok()) return s;
    const std::vector<float> mask = DecodeAllValues(o.region());
    if (static_cast<int64_t>(mask.size()) != length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options.region: expected ", length, " values (one per map entry), got ", mask.size()));
    }
    for (float v : mask) spec.region.push_back(v != 0.0f ? 1 : 0);
  }
  return spec;
}

void ToProto(const analysis::Comparison& c, const std::vector<int64_t>& map_shape,
             bool with_difference, v1::Comparison* out) {
  Set(c.spearman, c.spearman_note, out->mutable_spearman());
  Set(c.kendall_tau_b, c.kendall_note, out->mutable_kendall_tau_b());
  Set(c.pearson, c.pearson_note, out->mutable_pearson());
  out->set_cosine(c.cosine);
  out->set_top_k_iou(c.top_k_iou);
  out->set_top_k_used_a(c.top_k_used_a);
  out->set_top_k_used_b(c.top_k_used_b);
  out->set_l1(c.l1);
  out->set_l2(c.l2);
  out->set_js_divergence(c.js_divergence);
  Set(c.ssim, c.ssim_note, out->mutable_ssim());
  Set(c.emd, c.emd_note, out->mutable_emd());
  if (c.com_a) {
    out->mutable_com_a()->set_row(c.com_a->row);
    out->mutable_com_a()->set_col(c.com_a->col);
  }
  if (c.com_b) {
    out->mutable_com_b()->set_row(c.com_b->row);
    out->mutable_com_b()->set_col(c.com_b->col);
  }
  Set(c.com_shift, c.com_note, out->mutable_com_shift());
  Set(c.region_share_a, "", out->mutable_region_share_a());
  Set(c.region_share_b, "", out->mutable_region_share_b());
  if (!with_difference) return;
  FloatTensor(c.difference.data(), c.difference.size(), map_shape, out->mutable_difference());
}

}  // namespace attnroll::session
