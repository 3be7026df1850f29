#include "server/analysis/encoder_decoder.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace attnroll::analysis {
namespace {

GradientRule RuleOf(const EncoderDecoderSpec& spec) {
  return spec.rules ? GradientRule::kChefer : GradientRule::kNone;
}

// Rbar = (R - I) / rowsum(R - I) + I, a row whose sum is 0 staying 0 (then + I).
MatrixF Normalised(const MatrixF& r) {
  MatrixF out = r;
  out.diagonal().array() -= 1.0f;
  for (Eigen::Index i = 0; i < out.rows(); ++i) {
    const double s = out.row(i).cast<double>().sum();
    if (s != 0.0) {
      out.row(i) *= static_cast<float>(1.0 / s);
    } else {
      out.row(i).setZero();  // 0/0 := 0
    }
  }
  out.diagonal().array() += 1.0f;
  return out;
}

}  // namespace

absl::Status ValidateEncoderDecoderSpec(const EncoderDecoderSpec& spec, int num_heads) {
  if (spec.fusion == Fusion::kNone) {
    return absl::InvalidArgumentError(
        "encoder_decoder.fusion: expected MEAN, MAX, MIN or WEIGHTED, got NONE");
  }
  if (absl::Status s = ValidateHeadWeights(spec.head_weights, spec.fusion == Fusion::kWeighted,
                                           num_heads, "encoder_decoder");
      !s.ok()) {
    return s;
  }
  if (!(spec.residual >= 0.0f && spec.residual <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoder_decoder.residual: expected a in [0, 1], got ", spec.residual));
  }
  return absl::OkStatus();
}

int64_t EncoderDecoderWorkingBytes(int n_enc, int n_dec) {
  const int64_t e = int64_t{n_enc} * n_enc, d = int64_t{n_dec} * n_dec, x = int64_t{n_dec} * n_enc;
  // Three fusers, R_ee + scratch, R_dd + scratch, R_de, the last cross layer,
  // and the normalised copies and products of the cross step.
  return static_cast<int64_t>(sizeof(float)) * (3 * e + 3 * d + 6 * x + e + d);
}

EncoderDecoderRelevance::EncoderDecoderRelevance(const EncoderDecoderSpec& spec, int num_heads,
                                                 int decoder_layers, int n_enc, int n_dec)
    : spec_(spec),
      decoder_layers_(decoder_layers),
      n_enc_(n_enc),
      n_dec_(n_dec),
      enc_(spec.fusion, spec.head_weights, num_heads, n_enc, n_enc, RuleOf(spec)),
      dec_(spec.fusion, spec.head_weights, num_heads, n_dec, n_dec, RuleOf(spec)),
      cross_(spec.fusion, spec.head_weights, num_heads, n_dec, n_enc, RuleOf(spec)),
      r_ee_(MatrixF::Identity(n_enc, n_enc)),
      r_dd_(MatrixF::Identity(n_dec, n_dec)),
      r_de_(MatrixF::Zero(n_dec, n_enc)) {}

HeadFuser& EncoderDecoderRelevance::FuserFor(Stack stack) {
  switch (stack) {
    case Stack::kEncoder: return enc_;
    case Stack::kDecoderSelf: return dec_;
    default: return cross_;
  }
}

void EncoderDecoderRelevance::AddHead(Stack stack, int head, const ConstMatrixView& a,
                                      const ConstMatrixView* gradient) {
  FuserFor(stack).AddRows(head, 0, a, gradient);
}

// R <- At R with At = I + Ab (rules) or rownorm((1 - a) F + a I) (rollout);
// `also` (R_de for the decoder) gets the same left factor.
void EncoderDecoderRelevance::FoldSelf(HeadFuser& fuser, bool causal, const float* residual_weights,
                                       MatrixF& r, MatrixF* also) {
  Eigen::Map<MatrixF> fused = fuser.fused();
  if (causal) {
    for (Eigen::Index i = 0; i + 1 < fused.rows(); ++i) {  // row by row: row-major
      std::fill(fused.row(i).data() + i + 1, fused.row(i).data() + fused.cols(), 0.0f);
    }
  }
  if (spec_.rules) {
    if (fuser.residual_scale() != 1.0f) fused *= fuser.residual_scale();
    fused.diagonal().array() += 1.0f;
  } else {
    ApplyResidual(spec_.residual, spec_.renormalize, fused, fuser.residual_scale(), residual_weights);
  }
  scratch_.noalias() = fused * r;
  r.swap(scratch_);
  if (also != nullptr) {
    scratch_.noalias() = fused * (*also);
    also->swap(scratch_);
  }
}

void EncoderDecoderRelevance::EndLayer(Stack stack, int layer, const float* residual_weights) {
  if (spec_.rules) residual_weights = nullptr;
  HeadFuser& fuser = FuserFor(stack);
  Eigen::Map<MatrixF> fused = fuser.fused();
  switch (stack) {
    case Stack::kEncoder:
      FoldSelf(fuser, /*causal=*/false, residual_weights, r_ee_, nullptr);
      return;
    case Stack::kDecoderSelf:
      // Rules: R_de follows R_dd (rule 7); rollout: R_de is composed at the end.
      FoldSelf(fuser, spec_.causal, residual_weights, r_dd_, spec_.rules ? &r_de_ : nullptr);
      return;
    case Stack::kDecoderCross: {
      if (fuser.residual_scale() != 1.0f) fused *= fuser.residual_scale();
      if (spec_.rules) {
        // R_de += Rbar_dd^T Ab_cross Rbar_ee (rule 10).
        const MatrixF bar_dd = Normalised(r_dd_), bar_ee = Normalised(r_ee_);
        r_de_.noalias() += bar_dd.transpose() * (fused * bar_ee);
      } else if (layer == decoder_layers_ - 1) {
        cross_last_ = fused;
        // R_de = R_dd^T (Abar_cross_last R_ee); R_dd is complete: the cross
        // layer of the last decoder layer comes after its self-attention.
        r_de_.noalias() = r_dd_.transpose() * (cross_last_ * r_ee_);
      }
      return;
    }
  }
}

}  // namespace attnroll::analysis
