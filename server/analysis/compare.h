// Comparison of two saliency maps (audits: before/after fine-tuning, across
// models, inputs or time). Conventions: docs/conventions.md, "Comparison
// metrics". Pure math: Eigen + absl + std, LEMON's NetworkSimplex for the
// earth mover's distance. No gRPC, no threads, no I/O.
//
// Inputs. Two maps a (the baseline) and b (the candidate) of the same length n,
// read out the same way, optionally laid out row-major on an (h, w) grid. They
// are saliency MASSES: every entry must be finite and >= 0, and each map must
// have a positive sum; anything else is INVALID_ARGUMENT naming the map, the
// index and the value (a map with a negative entry is not silently shifted:
// every metric below treats a map as a distribution of mass). Floats are
// widened to double; every sum is accumulated in double.
//
// Definitions (p = a / sum(a), q = b / sum(b), the sum-normalised maps):
//   spearman       Pearson correlation of the average ranks (ties share the mean
//                  of their ranks) = scipy.stats.spearmanr.
//   kendall_tau_b  (P - Q) / sqrt((n0 - n1)(n0 - n2)), n0 = n(n-1)/2, n1/n2 the
//                  pairs tied in a/b = scipy.stats.kendalltau (variant 'b').
//   pearson        scipy.stats.pearsonr (raw values). All three are clipped to
//                  [-1, 1] and UNDEFINED when a map is constant (every entry
//                  equal, including n = 1): nullopt, and the *_note says which
//                  map (never a NaN).
//   cosine         <a, b> / (|a| |b|) of the raw maps (always defined: sums > 0).
//   top_k_iou      |T(a) ∩ T(b)| / |T(a) ∪ T(b)|, T(x) the indices of the k
//                  largest entries of x; ties broken by LOWER INDEX FIRST. With
//                  top_mass = f instead: T(x) is the smallest prefix of the entries
//                  sorted that way whose sum reaches f * sum(x) (so f = 1 keeps
//                  every positive entry and no zero). top_k_used_a/_b: |T(a)|, |T(b)|.
//   l1, l2         sum |p - q| (in [0, 2]) and sqrt(sum (p - q)^2).
//   js_divergence  Jensen-Shannon divergence in nats, in [0, ln 2]:
//                  (KL(p || m) + KL(q || m)) / 2, m = (p + q) / 2, 0 log 0 = 0;
//                  = scipy.spatial.distance.jensenshannon(p, q) ** 2.
//   difference     b - a, entry by entry (raw float values, signed).
// Grid metrics (only with a grid; otherwise nullopt and the note says so). Cell
// (r, c) is index r * w + c and has its centre at (r, c) in cell units:
//   ssim           mean SSIM of the RAW maps as skimage.metrics.structural_similarity
//                  with its defaults: uniform ssim_window x ssim_window window
//                  (default 7), K1 = 0.01, K2 = 0.03, sample covariance (N - 1),
//                  data_range = max(a, b) - min(a, b) over both maps, averaged over
//                  the windows that fit entirely inside the grid (skimage's crop).
//                  Undefined (note) when h or w < ssim_window. When data_range = 0
//                  both maps are the same constant: ssim = 1 (note says so).
//   emd            earth mover's (Wasserstein-1) distance between p and q with the
//                  Euclidean distance between cell centres as ground distance, in
//                  cells: exact min-cost transportation (compare.cc). Skipped with
//                  a note when the transport problem would exceed emd_max_arcs.
//   com_a, com_b   centres of mass (row, col) of p and q; com_shift = |com_b - com_a|
//                  (Euclidean, cells).
// Region (only when `region` is given, any grid or none): region_share_a/_b =
// share of each map's mass at the indices where region[i] != 0.
//
// Cost: O(n log n) (sorts) + O(n ssim_window) + the EMD. The EMD solves a
// transportation problem between the cells where p > q and those where q > p
// (common mass stays in place: optimal for a metric ground distance), so it has
// at most n^2 / 4 arcs. Measured on this 2-core machine (one core, independent
// dense maps, the EMD's worst case), whole comparison: 14x14 (~9,600 arcs)
// 1.0 ms, 16x16 1.5 ms, 24x24 10 ms, 32x32 (~262,000 arcs) 41 ms, 40x40
// 117 ms; without the EMD 0.08 ms at 14x14, 5 ms for 10^4 entries.
// Memory: O(n) plus ~80-100 bytes per EMD arc (CompareWorkingBytes bounds it).
// Thread-safety: CompareMaps is a pure function of its arguments; calls may run
// concurrently in any number of threads.
#ifndef ATTNROLL_SERVER_ANALYSIS_COMPARE_H_
#define ATTNROLL_SERVER_ANALYSIS_COMPARE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace attnroll::analysis {

// Default cap on the EMD's transport arcs (|{p > q}| * |{q > p}|): any grid up
// to 32 x 32 fits (worst case 512 * 512 arcs: ~25 MB, ~40 ms).
inline constexpr int64_t kDefaultEmdMaxArcs = int64_t{1} << 18;

struct CompareSpec {
  // Both 0: flat maps (no SSIM, EMD, centre of mass). Both > 0: h * w = n.
  int grid_h = 0, grid_w = 0;
  // Top-k IoU: top_k in [1, n], or top_mass in (0, 1] (top_k = 0); at most one
  // of them set. Neither set: k = ceil(n / 10) (the top 10% of entries).
  int top_k = 0;
  double top_mass = 0.0;
  // Optional mask of length n; region[i] != 0 marks index i as inside. Empty:
  // no region shares.
  std::vector<uint8_t> region;
  // SSIM window side: odd, >= 3 (skimage's default 7).
  int ssim_window = 7;
  // EMD skipped (nullopt + note) above this many transport arcs; >= 0.
  int64_t emd_max_arcs = kDefaultEmdMaxArcs;
};

struct GridPoint {
  double row = 0, col = 0;
};

struct Comparison {
  // Rank and linear correlations: nullopt + note when undefined (constant map).
  std::optional<double> spearman, kendall_tau_b, pearson;
  std::string spearman_note, kendall_note, pearson_note;
  double cosine = 0;
  double top_k_iou = 0;
  int top_k_used_a = 0, top_k_used_b = 0;  // sizes of T(a), T(b) (= k in k mode)
  double l1 = 0, l2 = 0;                   // of the sum-normalised maps
  double js_divergence = 0;                // nats
  std::optional<double> ssim;
  std::string ssim_note;
  std::optional<double> emd;  // grid cells
  std::string emd_note;
  std::optional<GridPoint> com_a, com_b;
  std::optional<double> com_shift;  // grid cells
  std::string com_note;
  std::optional<double> region_share_a, region_share_b;
  std::vector<float> difference;  // b - a
};

// Compares a (baseline) with b (candidate). INVALID_ARGUMENT (message names the
// field, the expected and the seen value) for: empty maps, different lengths,
// NaN/Inf or negative entries, a map summing to 0, a grid with h * w != n or
// only one side set, a region of length != n, top_k outside [0, n], top_mass
// outside [0, 1], both top_k and top_mass set, an even or < 3 ssim_window, a
// negative emd_max_arcs.
// `cancelled` (may be empty) is polled between metrics and inside the long
// loops: CANCELLED as soon as it says so.
absl::StatusOr<Comparison> CompareMaps(absl::Span<const float> a, absl::Span<const float> b,
                                       const CompareSpec& spec,
                                       const std::function<bool()>& cancelled = {});

// Estimated work units (~ns of one core) of one CompareMaps call of maps of
// length n: O(n log n) for ranks and top sets, O(n window) for SSIM, and the
// EMD's transport problem at its cap. For admission (a cost limit), not a
// promise.
double CompareCost(int64_t n, const CompareSpec& spec);

// Upper bound of the bytes one CompareMaps call of maps of length n allocates
// (for memory budgets): O(n) scratch plus the EMD's transport problem at its cap.
int64_t CompareWorkingBytes(int64_t n, const CompareSpec& spec);

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_COMPARE_H_
