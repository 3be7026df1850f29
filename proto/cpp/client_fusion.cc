#include "proto/cpp/client_fusion.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "attnroll/v1/analysis.pb.h"

namespace attnroll::v1 {
namespace {

// The fusion and weights one analysis asks for, or why it needs the heads.
struct Fused {
  HeadFusion fusion = HEAD_FUSION_MEAN;
  const google::protobuf::RepeatedField<float>* weights = nullptr;
};

// "MEAN" for HEAD_FUSION_MEAN, as the other messages name fusions.
std::string NameOf(HeadFusion f) {
  const std::string& name = HeadFusion_Name(f);
  return name.empty() ? absl::StrCat(static_cast<int>(f)) : name.substr(sizeof("HEAD_FUSION_") - 1);
}

absl::StatusOr<Fused> FusionOf(const Analysis& a, const std::string& path) {
  Fused f;
  std::string field;
  switch (a.kind_case()) {
    case Analysis::kRollout:
      if (a.rollout().has_gradient()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ".rollout.gradient: fusing heads on the client needs an analysis without "
                  "gradient (the gradient rule weights each head), got a gradient-weighted rollout"));
      }
      f.fusion = a.rollout().fusion();
      f.weights = &a.rollout().head_weights();
      field = ".rollout";
      break;
    case Analysis::kFlow:
      f.fusion = a.flow().fusion();
      f.weights = &a.flow().head_weights();
      field = ".flow";
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": fusing heads on the client needs a rollout, flow or validate analysis"));
  }
  if (f.fusion != HEAD_FUSION_MEAN && f.fusion != HEAD_FUSION_WEIGHTED) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, field, ".fusion: fusing heads on the client needs MEAN or WEIGHTED fusion, got ",
        NameOf(f.fusion)));
  }
  return f;
}

}  // namespace

absl::StatusOr<std::vector<float>> ClientFusionWeights(const PassHeader& header) {
  const Layout& layout = header.layout();
  if (layout.has_encoder_decoder()) {
    return absl::InvalidArgumentError(
        "layout.heads_fused_by_client: not supported with layout.encoder_decoder (send the heads)");
  }
  const int heads = static_cast<int>(layout.num_heads());
  const Fused* first = nullptr;
  std::string first_path;
  Fused chosen;  // the default rollout's mean when no analysis fuses
  for (int i = 0; i < header.analyses_size(); ++i) {
    const Analysis& a = header.analyses(i);
    if (a.kind_case() == Analysis::kValidate) continue;
    const std::string path = absl::StrCat("analyses[", i, "]");
    absl::StatusOr<Fused> f = FusionOf(a, path);
    if (!f.ok()) return f.status();
    const std::string field = absl::StrCat(path, a.kind_case() == Analysis::kFlow ? ".flow" : ".rollout");
    if (first == nullptr) {
      chosen = *f;
      first = &chosen;
      first_path = field;
      continue;
    }
    const bool same_weights = f->fusion == HEAD_FUSION_MEAN ||
                              (f->weights->size() == first->weights->size() &&
                               std::equal(f->weights->begin(), f->weights->end(), first->weights->begin()));
    if (f->fusion != first->fusion || !same_weights) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": fusing heads on the client sends one fused matrix per layer, so every analysis needs ",
          first_path, "'s fusion (", NameOf(first->fusion),
          first->fusion == HEAD_FUSION_WEIGHTED ? " with the same head_weights" : "", "), got ",
          f->fusion != first->fusion ? NameOf(f->fusion) : "WEIGHTED with other head_weights"));
    }
  }
  std::vector<float> weights(static_cast<size_t>(heads), 1.0f);
  if (first == nullptr || first->fusion == HEAD_FUSION_MEAN) return weights;
  if (first->weights->size() != heads) {
    return absl::InvalidArgumentError(absl::StrCat(first_path, ".head_weights: expected ", heads,
                                                   " weights (one per head), got ",
                                                   first->weights->size()));
  }
  double sum = 0;
  for (int h = 0; h < heads; ++h) {
    const float w = first->weights->Get(h);
    if (!std::isfinite(w) || w < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          first_path, ".head_weights[", h,
          "]: fusing heads on the client needs finite weights >= 0 (the fused rows are sent "
          "normalised), got ", w));
    }
    sum += w;
    weights[h] = w;
  }
  if (!(sum > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        first_path, ".head_weights: fusing heads on the client needs weights summing to > 0, got 0"));
  }
  return weights;
}

}  // namespace attnroll::v1
