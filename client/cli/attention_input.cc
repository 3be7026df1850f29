#include "client/cli/attention_input.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnroll::cli {
namespace {

std::string ShapeOf(const std::vector<int64_t>& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// A regular file holding one .npy array (by its magic, whatever its name).
bool IsSingleArrayFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[6] = {};
  in.read(magic, sizeof(magic));
  return in.gcount() == 6 && absl::string_view(magic, 6) == absl::string_view("\x93NUMPY", 6);
}

// [A, B, rest...] -> [B, A, rest...] (swaps the two leading axes).
npy::Array SwapLeadingAxes(const npy::Array& in) {
  npy::Array out;
  out.shape = in.shape;
  std::swap(out.shape[0], out.shape[1]);
  const int64_t a = in.shape[0], b = in.shape[1];
  int64_t block = 1;
  for (size_t i = 2; i < in.shape.size(); ++i) block *= in.shape[i];
  out.values.resize(in.values.size());
  for (int64_t i = 0; i < a; ++i) {
    for (int64_t j = 0; j < b; ++j) {
      std::copy_n(in.values.data() + (i * b + j) * block, block, out.values.data() + (j * a + i) * block);
    }
  }
  return out;
}

// Stacks L per-layer arrays of equal shape S into [L, S...].
absl::StatusOr<npy::Array> StackLayers(std::vector<npy::NamedArray> arrays, const std::string& what) {
  if (arrays.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no arrays found"));
  npy::Array out;
  out.shape = arrays[0].second.shape;
  for (const auto& [name, a] : arrays) {
    if (a.shape != out.shape) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": every layer must have the shape of the first, ",
                                                     ShapeOf(out.shape), ", but ", name, " is ",
                                                     ShapeOf(a.shape)));
    }
  }
  out.shape.insert(out.shape.begin(), static_cast<int64_t>(arrays.size()));
  for (auto& [name, a] : arrays) out.values.insert(out.values.end(), a.values.begin(), a.values.end());
  return out;
}

}  // namespace

bool ParseInputLayout(const std::string& name, InputLayout* out) {
  if (name == "blhnn") *out = InputLayout::kBatchFirst;
  else if (name == "lbhnn") *out = InputLayout::kLayerFirst;
  else return false;
  return true;
}

absl::StatusOr<AttentionInput> ReadAttentionInput(const std::string& path, InputLayout layout,
                                                  const std::string& what, bool square) {
  AttentionInput in;
  npy::Array a;  // [B, L, H, rows, cols] once normalised
  std::string how;
  if (IsSingleArrayFile(path)) {
    absl::StatusOr<npy::Array> one;
    if (layout == InputLayout::kLayerFirst) {
      one = npy::ReadNpy(path);  // reordered below, into an array of its own
    } else {
      // Mapped: a float32 file is used in place (no copy of its bytes, no
      // page faults beyond the page cache's).
      absl::StatusOr<npy::MappedArray> mapped = npy::MapNpy(path);
      if (!mapped.ok()) return mapped.status();
      if (mapped->keep != nullptr) {
        in.mapped = mapped->data;
        in.mapping = std::move(mapped->keep);
      }
      one = std::move(mapped->array);
    }
    if (!one.ok()) return one.status();
    const std::vector<int64_t> s = one->shape;
    how = absl::StrCat("one array ", ShapeOf(s));
    if (s.size() == 4) {
      if (layout != InputLayout::kUnset) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, " ", path, ": --layout is for 5-D arrays; this one is ", ShapeOf(s), " = [L, H, n, n]"));
      }
      a = std::move(*one);
      a.shape.insert(a.shape.begin(), 1);
    } else if (s.size() == 5) {
      if (layout == InputLayout::kUnset) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, " ", path, ": a 5-D array ", ShapeOf(s), " is ambiguous: say --layout blhnn for [B, L, H, n, n] "
            "or --layout lbhnn for [L, B, H, n, n] (torch.stack of per-layer [B, H, n, n] tensors)"));
      }
      a = layout == InputLayout::kLayerFirst ? SwapLeadingAxes(*one) : std::move(*one);
      in.batched = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", path, ": expected [L, H, n, n], or [B, L, H, n, n] / [L, B, H, n, n] with --layout, "
          "or a .npz / directory of per-layer [H, n, n] or [B, H, n, n] arrays; got ", ShapeOf(s)));
    }
  } else {
    absl::StatusOr<std::vector<npy::NamedArray>> arrays = npy::ReadArrays(path);
    if (!arrays.ok()) return arrays.status();
    if (layout != InputLayout::kUnset) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", path, ": --layout is for one 5-D array; per-layer arrays are [H, n, n] or [B, H, n, n]"));
    }
    const size_t count = arrays->size();
    absl::StatusOr<npy::Array> stacked = StackLayers(*std::move(arrays), absl::StrCat(what, " ", path));
    if (!stacked.ok()) return stacked.status();
    const std::vector<int64_t> layer(stacked->shape.begin() + 1, stacked->shape.end());
    how = absl::StrCat(count, " per-layer arrays ", ShapeOf(layer));
    if (layer.size() == 3) {
      a = std::move(*stacked);
      a.shape.insert(a.shape.begin(), 1);
    } else if (layer.size() == 4) {
      a = SwapLeadingAxes(*stacked);  // [L, B, ...] -> [B, L, ...]
      in.batched = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", path,
                                                     ": expected per-layer arrays [H, n, n] or [B, H, n, n], got ",
                                                     ShapeOf(layer)));
    }
    in.per_layer_files = true;
  }
  const std::vector<int64_t>& s = a.shape;
  if (square && s[3] != s[4]) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": expected square [n, n] matrices, got ",
                                                   s[3], " x ", s[4], " (", how, ")"));
  }
  in.batch = s[0];
  in.layers = s[1];
  in.heads = s[2];
  in.rows = s[3];
  in.cols = s[4];
  in.array = std::move(a);
  in.summary = absl::StrCat("L=", in.layers, " H=", in.heads,
                            square ? absl::StrCat(" n=", in.cols) : absl::StrCat(" rows=", in.rows, " cols=", in.cols),
                            " B=", in.batch, " (", how, in.batched && !in.per_layer_files
                                                          ? (layout == InputLayout::kLayerFirst ? ", lbhnn" : ", blhnn")
                                                          : "", ")");
  return in;
}

absl::StatusOr<npy::Array> ReadGradientInput(const std::string& path, InputLayout layout,
                                             const std::string& what, const AttentionInput& attention) {
  absl::StatusOr<AttentionInput> g =
      ReadAttentionInput(path, layout, what, attention.rows == attention.cols);
  if (!g.ok()) return g.status();
  if (g->array.shape != attention.array.shape || g->batched != attention.batched) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": expected the attention's shape, L=",
                                                   attention.layers, " H=", attention.heads, " n=", attention.cols,
                                                   " B=", attention.batch, "; got ", g->summary));
  }
  if (g->mapped != nullptr) {  // the caller owns the values: copy them out of the mapping
    const int64_t count = g->batch * g->layers * g->heads * g->rows * g->cols;
    g->array.values.assign(g->mapped, g->mapped + count);
  }
  return std::move(g->array);
}

absl::StatusOr<npy::Array> ReadSideInput(const std::string& path, InputLayout layout,
                                         const std::string& what, const AttentionInput& attention,
                                         const std::vector<std::vector<int64_t>>& shapes, int* matched) {
  const int64_t B = attention.batch, L = attention.layers;
  std::vector<std::string> wanted;
  auto fit = [&](const std::vector<int64_t>& got, const std::vector<int64_t>& lead) -> int {
    for (size_t i = 0; i < shapes.size(); ++i) {
      std::vector<int64_t> want = lead;
      want.insert(want.end(), shapes[i].begin(), shapes[i].end());
      wanted.push_back(ShapeOf(want));
      if (got == want) return static_cast<int>(i);
    }
    return -1;
  };
  npy::Array out;
  int which = -1;
  // The side input's own form decides: one array [L, ...] (or [B, L, ...] /
  // [L, B, ...] by the layout), or one array per layer ([...] / [B, ...]).
  const bool one_array = IsSingleArrayFile(path);
  if (one_array) {
    absl::StatusOr<npy::Array> a = npy::ReadNpy(path);
    if (!a.ok()) return a.status();
    std::vector<int64_t> lead = {L};
    if (attention.batched) {
      lead = layout == InputLayout::kLayerFirst ? std::vector<int64_t>{L, B} : std::vector<int64_t>{B, L};
    }
    which = fit(a->shape, lead);
    if (which >= 0) {
      out = attention.batched && layout == InputLayout::kLayerFirst ? SwapLeadingAxes(*a) : std::move(*a);
      if (!attention.batched) out.shape.insert(out.shape.begin(), 1);
    } else {
      out.shape = a->shape;
    }
  } else {
    absl::StatusOr<std::vector<npy::NamedArray>> arrays = npy::ReadArrays(path);
    if (!arrays.ok()) return arrays.status();
    if (static_cast<int64_t>(arrays->size()) != L) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": expected ", L,
                                                     " per-layer arrays (one per attention layer), got ",
                                                     arrays->size()));
    }
    absl::StatusOr<npy::Array> stacked = StackLayers(*std::move(arrays), absl::StrCat(what, " ", path));
    if (!stacked.ok()) return stacked.status();
    const std::vector<int64_t> layer(stacked->shape.begin() + 1, stacked->shape.end());
    which = fit(layer, attention.batched ? std::vector<int64_t>{B} : std::vector<int64_t>{});
    if (which >= 0) {
      out = attention.batched ? SwapLeadingAxes(*stacked) : std::move(*stacked);
      if (!attention.batched) out.shape.insert(out.shape.begin(), 1);
    } else {
      out.shape = layer;
    }
  }
  if (which < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", path, ": expected ", one_array ? "shape " : "per-layer arrays ",
        absl::StrJoin(wanted, " or "), attention.batched && one_array
                                           ? (layout == InputLayout::kLayerFirst ? " (lbhnn)" : " (blhnn)")
                                           : "",
        ", got ", ShapeOf(out.shape)));
  }
  if (matched != nullptr) *matched = which;
  return out;
}

}  // namespace attnroll::cli
