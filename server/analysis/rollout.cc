#include "server/analysis/rollout.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/analysis/blas.h"

namespace attnroll::analysis {

const char* RolloutPathName(RolloutPath path) {
  return path == RolloutPath::kRow ? "row" : "chain";
}

int LastLayer(const RolloutSpec& spec, int num_layers) {
  return spec.last_layer < 0 ? num_layers - 1 : spec.last_layer;
}

absl::Status ValidateRolloutSpec(const RolloutSpec& spec, int num_layers, int num_heads, int m,
                                 absl::string_view root) {
  const int last = LastLayer(spec, num_layers);
  if (spec.first_layer < 0 || spec.first_layer > last || last >= num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        root, ".layers: expected 0 <= first <= last < num_layers = ", num_layers, ", got ",
        spec.first_layer, ":", last));
  }
  if (!(spec.residual >= 0.0f && spec.residual <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(root, ".residual: expected a in [0, 1], got ", spec.residual));
  }
  const bool head_specific = spec.fusion == Fusion::kNone;
  if (head_specific && spec.head_aggregate == Fusion::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat(root, ".head_aggregate: expected MEAN, MAX, MIN or WEIGHTED, got NONE"));
  }
  if (absl::Status s = ValidateHeadWeights(
          spec.head_weights,
          spec.fusion == Fusion::kWeighted || (head_specific && spec.head_aggregate == Fusion::kWeighted),
          num_heads, root);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidatePruneSpec(spec.prune); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(root, ".", s.message()));
  }
  return ValidateReadout(spec.readout, m);
}

RolloutPath ChooseRolloutPath(const RolloutSpec& spec, int num_layers, int m) {
  if (spec.per_layer) return RolloutPath::kChain;
  const double layers = LastLayer(spec, num_layers) - spec.first_layer + 1;
  const double k = NumMaps(spec.readout);
  const double mm = static_cast<double>(m) * m;
  // Seconds-proportional model: a GEMM runs ~8x more flops per byte read than
  // a vector-matrix product, which is bound by reading At_l (4 m^2 bytes).
  const double chain = (layers - 1) * 2.0 * mm * m;
  const double row = layers * std::max(2.0 * k * mm, 8.0 * 4.0 * mm);
  return row < chain ? RolloutPath::kRow : RolloutPath::kChain;
}

int64_t RolloutWorkingBytes(const RolloutSpec& spec, int num_layers, int num_heads, int m,
                            RolloutPath path) {
  const int64_t layers = LastLayer(spec, num_layers) - spec.first_layer + 1;
  const int64_t mat = static_cast<int64_t>(m) * m * static_cast<int64_t>(sizeof(float));
  const int64_t out =
      (spec.per_layer ? layers : 1) * NumMaps(spec.readout) * m * static_cast<int64_t>(sizeof(float));
  // The fuser's accumulator, plus R and a product buffer (chain), or every At_l
  // and the k x m vectors pushed back through them (row); per head when
  // head-specific (plus the aggregate).
  const int64_t row_vectors = 2 * NumMaps(spec.readout) * m * static_cast<int64_t>(sizeof(float));
  // discard_ratio sorts the indices of all m * m entries (4 bytes each).
  const int64_t prune = spec.prune.discard_ratio > 0 ? static_cast<int64_t>(m) * m * 4 : 0;
  const int64_t one =
      mat + (path == RolloutPath::kChain ? 2 * mat : layers * mat + row_vectors) + out + prune;
  return spec.fusion == Fusion::kNone ? num_heads * one + out : one;
}

SequenceRollout::SequenceRollout(const RolloutSpec& spec, int num_layers, int num_heads, int m,
                                 RolloutPath path, bool keep_layers)
    : spec_(spec),
      first_(spec.first_layer),
      last_(LastLayer(spec, num_layers)),
      m_(m),
      num_heads_(num_heads),
      path_(path),
      keep_layers_(keep_layers),
      wire_path_(spec.gradient == GradientRule::kNone && !spec.prune.enabled()),
      lower_only_(wire_path_ && spec.causal),
      top_rows_(path == RolloutPath::kRow && !keep_layers && !spec.readout.mean_of_rows &&
                spec.fusion != Fusion::kNone),
      fuser_(spec.fusion, spec.head_weights, num_heads, m, spec.gradient) {
  if (spec.fusion == Fusion::kNone) {
    RolloutSpec one = spec;
    one.fusion = Fusion::kMean;  // of a single head: the head itself
    one.head_weights.clear();
    per_head_.reserve(num_heads);
    for (int h = 0; h < num_heads; ++h) per_head_.emplace_back(one, num_layers, 1, m, path, keep_layers);
    return;
  }
  if (top_rows_) {
    slot_.assign(m, -1);
    const std::vector<int> rows = ResolvedRows(spec.readout, m);
    for (size_t k = 0; k < rows.size(); ++k) slot_[rows[k]] = static_cast<int>(k);
  }
  if (path_ == RolloutPath::kRow) layers_.reserve(last_ - first_ + 1);
}

bool SequenceRollout::AddHeadRows(int layer, int head, int row0, const ConstMatrixView& a,
                                  const ConstMatrixView* gradient, RowStats* stats, bool upper) {
  if (!WantsLayer(layer)) return false;
  if (!per_head_.empty()) return per_head_[head].AddHeadRows(layer, 0, row0, a, gradient, stats, upper);
  fuser_.AddRows(head, row0, a, gradient, stats, upper);
  return true;
}

bool SequenceRollout::AddWireHeads(int layer, int head, int count, WireType type, const WireRows* in,
                                   int row0, int rows, RowStats* stats, int stats_stride) {
  if (!WantsLayer(layer)) return false;
  if (!per_head_.empty()) {
    bool filled = true;
    for (int g = 0; g < count; ++g) {
      filled &= per_head_[head + g].AddWireHeads(
          layer, 0, 1, type, in + g, row0, rows,
          stats == nullptr ? nullptr : stats + static_cast<int64_t>(g) * stats_stride, stats_stride);
    }
    return filled;
  }
  if (top_rows_ && layer == last_) {
    // Only the rows read out are needed of the last layer; the caller
    // measures every row for validation.
    WireRows one[kMaxFuseGroup];
    const int64_t elem = static_cast<int64_t>(type == WireType::kF32 ? 4 : 2);
    for (int i = row0; i < row0 + rows; ++i) {
      if (slot_[i] < 0) continue;
      for (int g0 = 0; g0 < count; g0 += kMaxFuseGroup) {
        const int c = std::min(kMaxFuseGroup, count - g0);
        for (int g = 0; g < c; ++g) {
          one[g].data = static_cast<const char*>(in[g0 + g].data) + elem * (i - row0) * in[g0 + g].stride;
          one[g].stride = in[g0 + g].stride;
        }
        fuser_.AddWireRows(head + g0, c, type, one, i, 1, nullptr, 0, spec_.causal, lower_only_);
      }
    }
    return false;
  }
  fuser_.AddWireRows(head, count, type, in, row0, rows, stats, stats_stride, spec_.causal, lower_only_);
  return true;
}

void SequenceRollout::EndRows(int layer, int row0, int rows, const float* residual_weights) {
  if (!WantsLayer(layer) || !wire_path_) return;
  if (!per_head_.empty()) {
    for (SequenceRollout& head : per_head_) head.EndRows(layer, row0, rows, residual_weights);
    return;
  }
  const bool top = top_rows_ && layer == last_;
  const float scale = fuser_.residual_scale();
  for (int i = row0; i < row0 + rows; ++i) {
    if (top && slot_[i] < 0) continue;
    float* row = fuser_.fused_row(i);
    const int len = lower_only_ ? i + 1 : m_;
    ApplyResidualRow(residual_weights != nullptr ? residual_weights[i] : spec_.residual,
                     spec_.renormalize, scale, i, len, row);
    if (lower_only_ && path_ == RolloutPath::kChain) {
      std::fill(row + len, row + m_, 0.0f);  // R and its read-outs see the whole row
    }
  }
}

void SequenceRollout::AddHead(int layer, int head, const ConstMatrixView& a,
                              const ConstMatrixView* gradient) {
  AddHeadRows(layer, head, 0, a, gradient);
  if (head == num_heads_ - 1) EndLayer(layer);
}

void SequenceRollout::EndLayer(int layer, const float* residual_weights, bool rows_ended) {
  if (!WantsLayer(layer)) return;
  if (!per_head_.empty()) {
    for (SequenceRollout& head : per_head_) head.EndLayer(layer, residual_weights, rows_ended);
    return;
  }
  if (rows_ended && wire_path_) {  // the wire path finished every row already
    FoldLayer(layer, /*rows_done=*/true);
    return;
  }
  Eigen::Map<MatrixF> f = fuser_.fused();
  float scale = fuser_.residual_scale();
  const bool chefer = spec_.gradient == GradientRule::kChefer;
  if (spec_.prune.enabled() || spec_.gradient != GradientRule::kNone) {
    if (scale != 1.0f) f *= scale;  // the fused values themselves are needed
    scale = 1.0f;
  }
  if (spec_.gradient == GradientRule::kVitExplain) f = f.cwiseMax(0.0f);
  if (spec_.gradient != GradientRule::kNone && f.isZero(0.0f)) zero_layers_.push_back(layer);
  // Rows are renormalised where the rule says so (Chefer: only on request).
  const bool renormalize = chefer ? spec_.grad_row_normalize : spec_.renormalize;
  if (spec_.prune.any_at(PrunePlace::kBeforeResidual)) {
    emptied_rows_ += Prune(spec_.prune, PrunePlace::kBeforeResidual,
                           renormalize && spec_.prune.renormalize_before_residual, f);
  }
  // Causal: drop the (tolerated) mass above the diagonal before the residual
  // and any renormalisation, so At_l is exactly lower-triangular.
  if (spec_.causal) {
    for (Eigen::Index i = 0; i + 1 < f.rows(); ++i) {  // row by row: f is row-major
      std::fill(f.row(i).data() + i + 1, f.row(i).data() + f.cols(), 0.0f);
    }
  }
  if (chefer) {
    // R_l = R_{l-1} + Ab R_{l-1} = (I + Ab) R_{l-1}.
    f.diagonal().array() += 1.0f;
    if (spec_.grad_row_normalize) ApplyResidual(0.0f, true, f);
  } else {
    ApplyResidual(spec_.residual, spec_.renormalize, f, scale, residual_weights);
  }
  if (spec_.prune.any_at(PrunePlace::kAfterResidual)) {
    emptied_rows_ += Prune(spec_.prune, PrunePlace::kAfterResidual, renormalize, f);
  }
  FoldLayer(layer, /*rows_done=*/false);
}

namespace {

// out = v @ At for the k rows of v (m x m At, row-major), reading At once,
// row by row; `lower`: At is lower-triangular and only its lower triangle
// (j <= i) is read.
void PushBack(const MatrixF& v, const float* at, int m, bool lower, MatrixF& out) {
  out.setZero(v.rows(), m);
  for (int i = 0; i < m; ++i) {
    const int len = lower ? i + 1 : m;
    const Eigen::Map<const RowVectorF> row(at + static_cast<int64_t>(i) * m, len);
    for (Eigen::Index r = 0; r < v.rows(); ++r) {
      const float c = v(r, i);
      if (c != 0.0f) out.row(r).head(len) += c * row;
    }
  }
}

}  // namespace

void SequenceRollout::FoldLayer(int layer, bool rows_done) {
  if (path_ == RolloutPath::kRow) {
    if (layer == last_ && !keep_layers_) {
      // What the read-out needs of the last layer: its wanted rows, or the
      // mean of its rows (1/m times every row); the matrix is not kept.
      if (top_rows_) {
        const std::vector<int> rows = ResolvedRows(spec_.readout, m_);
        top_.resize(static_cast<Eigen::Index>(rows.size()), m_);
        for (size_t k = 0; k < rows.size(); ++k) {
          const int i = rows[k];
          const int len = spec_.causal ? i + 1 : m_;  // the wire path leaves j > i unset
          const float* row = fuser_.fused_row(i);
          std::copy(row, row + len, top_.row(k).data());
          std::fill(top_.row(k).data() + len, top_.row(k).data() + m_, 0.0f);
        }
      } else {
        const MatrixF mean = MatrixF::Constant(1, m_, 1.0f / static_cast<float>(m_));
        PushBack(mean, fuser_.fused().data(), m_, spec_.causal, top_);
      }
      return;
    }
    layers_.push_back(fuser_.TakeFused());  // no copy; the fuser allocates another
    return;
  }
  const size_t mm = static_cast<size_t>(m_) * m_;
  if (!have_r_) {
    r_ = fuser_.TakeFused();
    if (spec_.causal && !rows_done) {
      // (the wire path zeroed the upper triangle already)
      Eigen::Map<MatrixF> r = r_.Matrix(m_, m_);
      for (int i = 0; i + 1 < m_; ++i) std::fill(r.row(i).data() + i + 1, r.row(i).data() + m_, 0.0f);
    }
    have_r_ = true;
  } else {
    if (scratch_.empty()) scratch_ = Buffer(mm);
    const float* at = fuser_.fused().data();
    if (spec_.causal) {  // R and At_l are lower-triangular: so is their product
      LowerTimesLower(at, r_.data(), m_, scratch_.data());
    } else {
      GemmRows(at, m_, m_, r_.data(), m_, scratch_.data());
    }
    std::swap(r_, scratch_);
  }
  if (spec_.per_layer) AppendReadout(r_.Matrix(m_, m_));
}

std::vector<MatrixF> SequenceRollout::TakeLayers() {
  std::vector<MatrixF> out;
  out.reserve(layers_.size());
  for (Buffer& b : layers_) {
    MatrixF& at = out.emplace_back(b.Matrix(m_, m_));
    if (spec_.causal) {  // exactly lower-triangular (the wire path left the rest unset)
      for (int i = 0; i + 1 < m_; ++i) std::fill(at.row(i).data() + i + 1, at.row(i).data() + m_, 0.0f);
    }
    b.Reset();
  }
  layers_.clear();
  return out;
}

// Appends the k maps of R to per_layer_.
void SequenceRollout::AppendReadout(const Eigen::Ref<const MatrixF>& r) {
  const ReadoutSpec& ro = spec_.readout;
  const int len = m_ - ro.prefix;
  const size_t base = per_layer_.size();
  per_layer_.resize(base + static_cast<size_t>(NumMaps(ro)) * len);
  float* out = per_layer_.data() + base;
  if (ro.mean_of_rows) {
    Eigen::RowVectorXd sum = Eigen::RowVectorXd::Zero(m_);
    for (int i = 0; i < m_; ++i) sum += r.row(i).cast<double>();
    const RowVectorF mean = (sum / static_cast<double>(m_)).cast<float>();
    zero_maps_ += !WriteMap(ro, mean, out);
    return;
  }
  for (int row : ResolvedRows(ro, m_)) {
    zero_maps_ += !WriteMap(ro, r.row(row), out);
    out += len;
  }
}

Maps SequenceRollout::Finish(Maps* aggregate) {
  if (!per_head_.empty()) return FinishPerHead(aggregate);
  const ReadoutSpec& ro = spec_.readout;
  const int k = NumMaps(ro);
  Maps maps;
  if (spec_.per_layer) maps.shape.push_back(last_ - first_ + 1);
  maps.shape.push_back(k);
  for (int64_t d : MapShape(ro, m_)) maps.shape.push_back(d);

  if (path_ == RolloutPath::kChain) {
    if (!spec_.per_layer) AppendReadout(r_.Matrix(m_, m_));
    maps.values = std::move(per_layer_);
    return maps;
  }
  // Row path: v^T R = v^T At_last ... At_first, pushed back from the last
  // layer: v starts as the read-out's rows of At_last (kept by FoldLayer).
  MatrixF v;
  if (keep_layers_) {  // every layer kept: start from the unit rows (or 1/m)
    v = MatrixF::Zero(k, m_);
    if (ro.mean_of_rows) {
      v.setConstant(1.0f / static_cast<float>(m_));
    } else {
      const std::vector<int> rows = ResolvedRows(ro, m_);
      for (int i = 0; i < k; ++i) v(i, rows[i]) = 1.0f;
    }
  } else {
    v = std::move(top_);
  }
  MatrixF tmp;
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    PushBack(v, it->data(), m_, spec_.causal, tmp);
    v.swap(tmp);
    it->Reset();
  }
  layers_.clear();
  const int len = m_ - ro.prefix;
  maps.values.resize(static_cast<size_t>(k) * len);
  for (int i = 0; i < k; ++i) {
    zero_maps_ += !WriteMap(ro, v.row(i), maps.values.data() + static_cast<size_t>(i) * len);
  }
  return maps;
}

}  // namespace attnroll::analysis

namespace attnroll::analysis {

Maps SequenceRollout::FinishPerHead(Maps* aggregate) {
  Maps all;
  Maps agg;
  const int num_heads = static_cast<int>(per_head_.size());
  for (int h = 0; h < num_heads; ++h) {
    Maps one = per_head_[h].Finish();
    emptied_rows_ += per_head_[h].emptied_rows();
    zero_maps_ += per_head_[h].zero_maps();
    // A layer adds nothing to the aggregate only when it is zero for every head.
    const std::vector<int>& mine = per_head_[h].zero_layers();
    if (h == 0) {
      zero_layers_ = mine;
    } else {
      std::vector<int> both;
      std::set_intersection(zero_layers_.begin(), zero_layers_.end(), mine.begin(), mine.end(),
                            std::back_inserter(both));
      zero_layers_ = std::move(both);
    }
    if (h == 0) {
      all.shape.push_back(num_heads);
      all.shape.insert(all.shape.end(), one.shape.begin(), one.shape.end());
      agg.shape = one.shape;
      agg.values.assign(one.values.size(), 0.0f);
      all.values.reserve(one.values.size() * num_heads);
    }
    for (size_t i = 0; i < one.values.size(); ++i) {
      const float v = one.values[i];
      float& a = agg.values[i];
      switch (spec_.head_aggregate) {
        case Fusion::kMax: a = h == 0 ? v : std::max(a, v); break;
        case Fusion::kMin: a = h == 0 ? v : std::min(a, v); break;
        case Fusion::kWeighted: a += spec_.head_weights[h] * v; break;
        default: a += v / static_cast<float>(num_heads); break;
      }
    }
    all.values.insert(all.values.end(), one.values.begin(), one.values.end());
  }
  if (aggregate != nullptr) *aggregate = std::move(agg);
  return all;
}

}  // namespace attnroll::analysis
