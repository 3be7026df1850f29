#include "server/analysis/pruning.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

namespace attnroll::analysis {
namespace {

// Zeros the lowest floor(ratio * size) entries (ties: lower flat index first),
// except flat index 0, as vit-explain does (it drops index 0 from the list, so
// one fewer entry is zeroed when (0, 0) is among the lowest).
void DiscardLowest(double ratio, Eigen::Ref<MatrixF> f) {
  const int64_t size = f.size();
  const int64_t count = static_cast<int64_t>(std::floor(ratio * static_cast<double>(size)));
  if (count <= 0) return;
  // 32-bit indices: m <= 65536, so m * m fits (and the buffer is half the size).
  std::vector<uint32_t> order(size);
  std::iota(order.begin(), order.end(), 0u);
  float* v = f.data();
  auto lower = [v](uint32_t x, uint32_t y) { return v[x] < v[y] || (v[x] == v[y] && x < y); };
  std::nth_element(order.begin(), order.begin() + (count - 1), order.end(), lower);
  for (int64_t i = 0; i < count; ++i) {
    if (order[i] != 0) v[order[i]] = 0.0f;
  }
}

void KeepMass(float mass, Eigen::Ref<RowVectorF> row, std::vector<int>& idx) {
  const int m = static_cast<int>(row.size());
  const double total = row.cast<double>().sum();
  if (total <= 0.0) return;
  idx.resize(m);
  std::iota(idx.begin(), idx.end(), 0);
  // Ascending by value (ties: lower column first), as DINO's torch.sort.
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return row(a) < row(b); });
  double cum = 0.0;
  for (int t = 0; t < m; ++t) {
    cum += row(idx[t]);
    if (cum / total > 1.0 - mass) break;  // this and larger entries are kept
    row(idx[t]) = 0.0f;
  }
}

void KeepTopK(int k, Eigen::Ref<RowVectorF> row, std::vector<int>& idx) {
  const int m = static_cast<int>(row.size());
  if (k >= m) return;
  idx.resize(m);
  std::iota(idx.begin(), idx.end(), 0);
  // Descending by value, ties: lower column first (kept).
  std::nth_element(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return row(a) > row(b) || (row(a) == row(b) && a < b);
  });
  for (int t = k; t < m; ++t) row(idx[t]) = 0.0f;
}

}  // namespace

absl::Status ValidatePruneSpec(const PruneSpec& spec) {
  if (!(spec.discard_ratio >= 0.0 && spec.discard_ratio < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pruning.discard_ratio: expected 0 <= ratio < 1, got ", spec.discard_ratio));
  }
  if (!(spec.threshold >= 0.0f && std::isfinite(spec.threshold))) {
    return absl::InvalidArgumentError(
        absl::StrCat("pruning.threshold: expected a finite value >= 0, got ", spec.threshold));
  }
  if (!(spec.mass >= 0.0f && spec.mass <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pruning.mass: expected 0 < mass <= 1 (0 = off), got ", spec.mass));
  }
  if (spec.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("pruning.top_k: expected >= 0, got ", spec.top_k));
  }
  return absl::OkStatus();
}

bool PruneSpec::any_at(PrunePlace place) const {
  return (discard_ratio > 0 && discard_at == place) || (threshold > 0 && threshold_at == place) ||
         (mass > 0 && mass_at == place) || (top_k > 0 && top_k_at == place);
}

namespace {

// The steps of `spec` that run, in order; `all` ignores their places.
int64_t PruneSteps(const PruneSpec& spec, bool all, PrunePlace place, bool renormalize, Eigen::Ref<MatrixF> f) {
  auto runs = [&](bool on, PrunePlace at) { return on && (all || at == place); };
  // Rows with no mass before pruning (possible with gradient weighting) are
  // left alone; only rows that pruning empties get their diagonal.
  std::vector<bool> had_mass(f.rows());
  for (Eigen::Index i = 0; i < f.rows(); ++i) had_mass[i] = f.row(i).cast<double>().sum() > 0.0;
  if (runs(spec.discard_ratio > 0, spec.discard_at)) DiscardLowest(spec.discard_ratio, f);
  const bool threshold = runs(spec.threshold > 0, spec.threshold_at);
  const bool mass = runs(spec.mass > 0, spec.mass_at);
  const bool top_k = runs(spec.top_k > 0, spec.top_k_at);
  std::vector<int> idx;
  int64_t emptied = 0;
  for (Eigen::Index i = 0; i < f.rows(); ++i) {
    auto row = f.row(i);
    if (threshold) row = (row.array() < spec.threshold).select(0.0f, row);
    if (mass) KeepMass(spec.mass, row, idx);
    if (top_k) KeepTopK(spec.top_k, row, idx);
    const double s = row.cast<double>().sum();
    if (s > 0.0) {
      if (renormalize) row *= static_cast<float>(1.0 / s);
    } else if (had_mass[i]) {
      row.setZero();
      row(i) = 1.0f;  // a row pruning emptied keeps its diagonal
      ++emptied;
    }
  }
  return emptied;
}

}  // namespace

int64_t Prune(const PruneSpec& spec, PrunePlace place, bool renormalize, Eigen::Ref<MatrixF> f) {
  return PruneSteps(spec, /*all=*/false, place, renormalize, f);
}

int64_t Prune(const PruneSpec& spec, bool renormalize, Eigen::Ref<MatrixF> f) {
  return PruneSteps(spec, /*all=*/true, PrunePlace::kBeforeResidual, renormalize, f);
}

}  // namespace attnroll::analysis
