#include "server/analysis/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

// LEMON's graph containers trip GCC 12's -Wmaybe-uninitialized when inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <lemon/network_simplex.h>
#include <lemon/smart_graph.h>
#pragma GCC diagnostic pop

namespace attnroll::analysis {
namespace {

// ---- validation ---------------------------------------------------------------

// Checks one map (finite, >= 0, positive sum) and returns its sum in double.
absl::Status CheckMap(const char* name, absl::Span<const float> x, double* sum) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("map ", name, ": entry ", i, " is ", v, ", expected a finite value"));
    }
    if (v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("map ", name, ": entry ", i, " is ", v,
                       ", expected >= 0 (maps are compared as saliency masses)"));
    }
    s += v;
  }
  if (!(s > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "map ", name, ": every entry is 0 (sum 0), expected a positive sum (the metrics "
        "compare distributions of mass)"));
  }
  *sum = s;
  return absl::OkStatus();
}

absl::Status CheckSpec(const CompareSpec& spec, int64_t n) {
  if (spec.grid_h < 0 || spec.grid_w < 0 || (spec.grid_h == 0) != (spec.grid_w == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("grid: expected both sides > 0 (or both 0 for flat maps), got ",
                     spec.grid_h, "x", spec.grid_w));
  }
  if (spec.grid_h > 0 && static_cast<int64_t>(spec.grid_h) * spec.grid_w != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grid: ", spec.grid_h, "x", spec.grid_w, " = ",
        static_cast<int64_t>(spec.grid_h) * spec.grid_w, " cells, expected the map length ", n));
  }
  if (spec.top_k < 0 || spec.top_k > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k: expected 0 (unset) or 1..", n, " (the map length), got ", spec.top_k));
  }
  if (!(spec.top_mass >= 0.0 && spec.top_mass <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_mass: expected 0 (unset) or a share in (0, 1], got ", spec.top_mass));
  }
  if (spec.top_k > 0 && spec.top_mass > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_k and top_mass: expected at most one set, got top_k = ", spec.top_k,
        " and top_mass = ", spec.top_mass));
  }
  if (!spec.region.empty() && static_cast<int64_t>(spec.region.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("region: expected ", n,
                                                   " entries (the map length), got ",
                                                   spec.region.size()));
  }
  if (spec.ssim_window < 3 || spec.ssim_window % 2 == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ssim_window: expected an odd size >= 3, got ", spec.ssim_window));
  }
  if (spec.emd_max_arcs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("emd_max_arcs: expected >= 0, got ", spec.emd_max_arcs));
  }
  return absl::OkStatus();
}

bool IsConstant(absl::Span<const float> x) {
  for (float v : x)
    if (v != x[0]) return false;
  return true;
}

// "map a is constant" / "map b is constant" / "maps a and b are constant".
std::string ConstantReason(bool ca, bool cb) {
  if (ca && cb) return "maps a and b are constant";
  return ca ? "map a is constant" : "map b is constant";
}

// ---- correlations ---------------------------------------------------------------

// Pearson correlation of two non-constant vectors, as scipy.stats.pearsonr:
// centred, each divided by its norm, then the dot product, clipped to [-1, 1].
double Pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double nx = 0, ny = 0;
  for (size_t i = 0; i < n; ++i) {
    nx += (x[i] - mx) * (x[i] - mx);
    ny += (y[i] - my) * (y[i] - my);
  }
  nx = std::sqrt(nx);
  ny = std::sqrt(ny);
  double r = 0;
  for (size_t i = 0; i < n; ++i) r += ((x[i] - mx) / nx) * ((y[i] - my) / ny);
  return std::clamp(r, -1.0, 1.0);
}

// 1-based ranks; tied values share the mean of their ranks.
std::vector<double> AverageRanks(absl::Span<const float> x) {
  const size_t n = x.size();
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int i, int j) { return x[i] < x[j]; });
  std::vector<double> ranks(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && x[idx[j + 1]] == x[idx[i]]) ++j;
    const double r = 0.5 * static_cast<double>(i + j) + 1.0;
    for (size_t t = i; t <= j; ++t) ranks[idx[t]] = r;
    i = j + 1;
  }
  return ranks;
}

// Sum of t (t - 1) / 2 over the runs of equal values of a sorted range.
template <typename Eq>
int64_t TiedPairs(size_t n, Eq equal_to_previous) {
  int64_t pairs = 0, run = 1;
  for (size_t i = 1; i <= n; ++i) {
    if (i < n && equal_to_previous(i)) {
      ++run;
    } else {
      pairs += run * (run - 1) / 2;
      run = 1;
    }
  }
  return pairs;
}

// Number of pairs i < j with v[i] > v[j] (strictly); sorts v. Merge sort.
int64_t CountInversions(std::vector<float>& v) {
  const size_t n = v.size();
  std::vector<float> buf(n);
  int64_t inversions = 0;
  for (size_t width = 1; width < n; width *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * width) {
      const size_t mid = std::min(lo + width, n), hi = std::min(lo + 2 * width, n);
      size_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) {
        if (v[j] < v[i]) {
          inversions += static_cast<int64_t>(mid - i);
          buf[k++] = v[j++];
        } else {
          buf[k++] = v[i++];
        }
      }
      while (i < mid) buf[k++] = v[i++];
      while (j < hi) buf[k++] = v[j++];
    }
    v.swap(buf);
  }
  return inversions;
}

// Kendall tau-b of two non-constant vectors in O(n log n) (Knight 1966), the
// formula of scipy.stats.kendalltau:
//   (n0 - n1 - n2 + n3 - 2 D) / sqrt((n0 - n1) (n0 - n2)),
// n0 = n (n - 1) / 2, n1 / n2 pairs tied in x / y, n3 pairs tied in both, D
// discordant pairs.
double KendallTauB(absl::Span<const float> x, absl::Span<const float> y) {
  const size_t n = x.size();
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int i, int j) {
    return x[i] < x[j] || (x[i] == x[j] && y[i] < y[j]);
  });
  const int64_t xtie = TiedPairs(n, [&](size_t i) { return x[idx[i]] == x[idx[i - 1]]; });
  const int64_t ntie = TiedPairs(n, [&](size_t i) {
    return x[idx[i]] == x[idx[i - 1]] && y[idx[i]] == y[idx[i - 1]];
  });
  std::vector<float> ys(n);
  for (size_t i = 0; i < n; ++i) ys[i] = y[idx[i]];
  // Within a run of equal x the y are ascending, so every inversion is a
  // discordant pair (x_i < x_j, y_i > y_j).
  const int64_t dis = CountInversions(ys);  // ys is now sorted
  const int64_t ytie = TiedPairs(n, [&](size_t i) { return ys[i] == ys[i - 1]; });
  const int64_t tot = static_cast<int64_t>(n) * static_cast<int64_t>(n - 1) / 2;
  const double num = static_cast<double>(tot - xtie - ytie + ntie - 2 * dis);
  // One square root of the product (exact below n ~ 13,000): a perfect
  // (anti-)correlation gives exactly +-1. scipy divides by two roots (1 ulp apart).
  const double tau = num / std::sqrt(static_cast<double>(tot - xtie) *
                                     static_cast<double>(tot - ytie));
  return std::clamp(tau, -1.0, 1.0);
}

// ---- top sets -------------------------------------------------------------------

// Indices of the top set of x (see compare.h), as a 0/1 mask; returns its size.
int TopSet(absl::Span<const float> x, int k, double mass, std::vector<uint8_t>* mask) {
  const size_t n = x.size();
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Largest first; equal values keep index order (lower index first).
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return x[i] > x[j]; });
  int size = k;
  if (k == 0) {
    // Smallest prefix of `order` holding `mass` of the total. The total is summed
    // in the same order, so mass = 1 ends exactly at the last positive entry.
    double total = 0;
    for (int i : order) total += x[i];
    const double target = mass * total;
    double cum = 0;
    size = static_cast<int>(n);
    for (size_t t = 0; t < n; ++t) {
      cum += x[order[t]];
      if (cum >= target) {
        size = static_cast<int>(t + 1);
        break;
      }
    }
  }
  mask->assign(n, 0);
  for (int t = 0; t < size; ++t) (*mask)[order[t]] = 1;
  return size;
}

// ---- grid metrics ---------------------------------------------------------------

std::string NoGridNote(const char* metric) {
  return absl::StrCat(metric, " needs a grid (grid_h = grid_w = 0: flat maps; use 1 x n for a "
                      "sequence)");
}

// skimage.metrics.structural_similarity(a, b, data_range=max - min) with a
// win x win uniform window and sample covariance, mean over the full windows.
//
// Window sums are separable (a row pass, then a column pass: O(n win), not
// O(n win^2)), each a direct sum of win terms (no running-sum drift). Variances
// use skimage's E[x^2] - E[x]^2 on values shifted by the map's mean: variance
// is shift-invariant, and the shift bounds the cancellation error by
// ~1e-16 data_range^2, far below C2 = (0.03 data_range)^2.
bool Ssim(absl::Span<const float> a, absl::Span<const float> b, double sa, double sb, int h,
          int w, int win, const std::function<bool()>& cancelled, Comparison* out) {
  if (h < win || w < win) {
    out->ssim_note = absl::StrCat("SSIM needs a grid of at least ", win, "x", win,
                                  " (the window; ssim_window), got ", h, "x", w);
    return true;
  }
  const auto [amin, amax] = std::minmax_element(a.begin(), a.end());
  const auto [bmin, bmax] = std::minmax_element(b.begin(), b.end());
  const double range = static_cast<double>(std::max(*amax, *bmax)) -
                       static_cast<double>(std::min(*amin, *bmin));
  if (range == 0) {
    out->ssim = 1.0;
    out->ssim_note = "data_range 0: both maps are the same constant, SSIM 1 by convention";
    return true;
  }
  const size_t n = a.size();
  const double ca = sa / static_cast<double>(n), cb = sb / static_cast<double>(n);
  struct Moments {
    double x = 0, y = 0, xx = 0, yy = 0, xy = 0;
    void Add(const Moments& o) {
      x += o.x;
      y += o.y;
      xx += o.xx;
      yy += o.yy;
      xy += o.xy;
    }
  };
  std::vector<Moments> cell(n);
  for (size_t i = 0; i < n; ++i) {
    const double x = a[i] - ca, y = b[i] - cb;
    cell[i] = {x, y, x * x, y * y, x * y};
  }
  const int oh = h - win + 1, ow = w - win + 1;
  std::vector<Moments> rows(static_cast<size_t>(h) * ow);  // sums over win columns
  for (int r = 0; r < h; ++r) {
    if (cancelled && cancelled()) return false;
    for (int c0 = 0; c0 < ow; ++c0)
      for (int c = c0; c < c0 + win; ++c) rows[r * ow + c0].Add(cell[r * w + c]);
  }
  const double c1 = (0.01 * range) * (0.01 * range);
  const double c2 = (0.03 * range) * (0.03 * range);
  const double np = static_cast<double>(win) * win;
  const double cov_norm = np / (np - 1);
  double total = 0;
  for (int r0 = 0; r0 < oh; ++r0) {
    if (cancelled && cancelled()) return false;
    for (int c0 = 0; c0 < ow; ++c0) {
      Moments m;
      for (int r = r0; r < r0 + win; ++r) m.Add(rows[r * ow + c0]);
      const double mx = m.x / np, my = m.y / np;  // shifted means
      const double vx = cov_norm * (m.xx / np - mx * mx);
      const double vy = cov_norm * (m.yy / np - my * my);
      const double vxy = cov_norm * (m.xy / np - mx * my);
      const double ux = mx + ca, uy = my + cb;
      total += ((2 * ux * uy + c1) * (2 * vxy + c2)) /
               ((ux * ux + uy * uy + c1) * (vx + vy + c2));
    }
  }
  out->ssim = total / (static_cast<double>(oh) * ow);
  return true;
}

// Integer units of the sum-normalised x: non-negative, summing to exactly
// `scale`; the remainder of the floors goes by largest fractional part (ties:
// lower index), a rounding surplus is taken back from the smallest.
std::vector<int64_t> MassUnits(absl::Span<const float> x, double sum, int64_t scale) {
  const size_t n = x.size();
  const double f = static_cast<double>(scale) / sum;
  std::vector<int64_t> units(n);
  std::vector<double> frac(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const double v = x[i] * f;
    const double fl = std::floor(v);
    units[i] = static_cast<int64_t>(fl);
    frac[i] = v - fl;
    total += units[i];
  }
  int64_t diff = scale - total;
  if (diff == 0) return units;
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return frac[i] > frac[j]; });
  for (size_t t = 0; diff > 0; t = (t + 1) % n, --diff) ++units[order[t]];
  // Surplus: smallest fractional parts first, cyclically, skipping empty cells
  // (terminates: the units sum to more than scale > 0).
  for (size_t t = n; diff < 0;) {
    t = (t == 0 ? n : t) - 1;
    const int i = order[t];
    if (units[i] > 0) {
      --units[i];
      ++diff;
    }
  }
  return units;
}

// Exact earth mover's distance between the sum-normalised maps on the grid,
// Euclidean ground distance between cell centres.
//
// Mass common to both maps stays in place (optimal for any metric ground
// distance), so the problem is a transportation problem from the cells with
// surplus (p > q) to those with deficit (q > p) on the complete bipartite graph
// between them (every arc is needed: with a Euclidean cost, unlike L1, a grid
// graph with neighbour arcs does not give the same distances). Solved by LEMON's
// NetworkSimplex, which requires integer data: masses are scaled to units of
// 2^-50 (each map exactly 2^50 units, rounding error <= 2^-50 per cell), costs to
// integer multiples of 2^-K cells, K as large as int64 potentials allow (K = 47
// at 14x14, >= 32 for any grid of up to 10^4 cells), and the cost of the optimal flow is then
// summed with the exact (double) distances: within 2^-K of the optimum.
void Emd(absl::Span<const float> a, absl::Span<const float> b, double sa, double sb, int h,
         int w, int64_t max_arcs, Comparison* out) {
  constexpr int64_t kScale = int64_t{1} << 50;
  const std::vector<int64_t> pa = MassUnits(a, sa, kScale);
  const std::vector<int64_t> pb = MassUnits(b, sb, kScale);
  std::vector<int> src, dst;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (pa[i] > pb[i]) src.push_back(static_cast<int>(i));
    if (pa[i] < pb[i]) dst.push_back(static_cast<int>(i));
  }
  const int64_t arcs = static_cast<int64_t>(src.size()) * static_cast<int64_t>(dst.size());
  if (arcs == 0) {  // same units everywhere
    out->emd = 0.0;
    return;
  }
  if (arcs > max_arcs) {
    out->emd_note = absl::StrCat("EMD skipped: ", src.size(), " surplus x ", dst.size(),
                                 " deficit cells = ", arcs,
                                 " transport arcs, above emd_max_arcs = ", max_arcs);
    return;
  }
  using Graph = lemon::SmartDigraph;
  Graph g;
  const int nodes = static_cast<int>(src.size() + dst.size());
  g.reserveNode(nodes);
  g.reserveArc(static_cast<int>(arcs));
  std::vector<Graph::Node> node(nodes);
  for (int v = 0; v < nodes; ++v) node[v] = g.addNode();
  Graph::NodeMap<int64_t> supply(g);
  for (size_t s = 0; s < src.size(); ++s) supply[node[s]] = pa[src[s]] - pb[src[s]];
  for (size_t t = 0; t < dst.size(); ++t)
    supply[node[src.size() + t]] = pa[dst[t]] - pb[dst[t]];  // negative: demand

  // Costs: round(d * 2^k) with (nodes + 1) * max cost <= 2^59. LEMON's
  // artificial arcs cost (max cost + 1) * nodes and potentials are sums of costs
  // along tree paths, so every intermediate stays below 2^62.
  const double max_d = std::hypot(h - 1.0, w - 1.0);  // >= 1: src and dst differ
  const double cost_scale =
      std::exp2(std::floor(std::log2(std::ldexp(1.0, 59) / ((nodes + 1.0) * max_d))));
  Graph::ArcMap<int64_t> cost(g);
  std::vector<double> dist(static_cast<size_t>(arcs));
  for (size_t s = 0; s < src.size(); ++s) {
    const int rs = src[s] / w, cs = src[s] % w;
    for (size_t t = 0; t < dst.size(); ++t) {
      const double d = std::hypot(static_cast<double>(dst[t] / w - rs),
                                  static_cast<double>(dst[t] % w - cs));
      const Graph::Arc arc = g.addArc(node[s], node[src.size() + t]);
      cost[arc] = std::llround(d * cost_scale);
      dist[g.id(arc)] = d;
    }
  }
  lemon::NetworkSimplex<Graph, int64_t, int64_t> simplex(g);
  simplex.supplyMap(supply).costMap(cost);
  const auto result = simplex.run();
  if (result != lemon::NetworkSimplex<Graph, int64_t, int64_t>::OPTIMAL) {
    // Balanced supplies on a complete bipartite graph with uncapacitated arcs
    // are always feasible and bounded: a broken invariant.
    out->emd_note = absl::StrCat("EMD failed: NetworkSimplex returned ", result,
                                 " on a balanced transportation problem (bug)");
    return;
  }
  double total = 0;
  for (Graph::ArcIt arc(g); arc != lemon::INVALID; ++arc) {
    const int64_t f = simplex.flow(arc);
    if (f > 0) total += static_cast<double>(f) * dist[g.id(arc)];
  }
  out->emd = total / static_cast<double>(kScale);
}

void CentreOfMass(absl::Span<const float> a, absl::Span<const float> b, double sa, double sb,
                  int w, Comparison* out) {
  auto com = [w](absl::Span<const float> x, double sum) {
    GridPoint p;
    for (size_t i = 0; i < x.size(); ++i) {
      p.row += static_cast<double>(x[i]) * static_cast<double>(static_cast<int>(i) / w);
      p.col += static_cast<double>(x[i]) * static_cast<double>(static_cast<int>(i) % w);
    }
    p.row /= sum;
    p.col /= sum;
    return p;
  };
  out->com_a = com(a, sa);
  out->com_b = com(b, sb);
  out->com_shift = std::hypot(out->com_b->row - out->com_a->row, out->com_b->col - out->com_a->col);
}

}  // namespace

absl::StatusOr<Comparison> CompareMaps(absl::Span<const float> a, absl::Span<const float> b,
                                       const CompareSpec& spec, const std::function<bool()>& cancelled) {
  const auto stop = [&cancelled] { return cancelled && cancelled(); };
  const absl::Status kCancelled = absl::CancelledError("compare: cancelled");
  if (a.empty() || b.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "maps: expected non-empty maps, got lengths a = ", a.size(), ", b = ", b.size()));
  }
  if (a.size() != b.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "map b: expected the length of map a (", a.size(), "), got ", b.size()));
  }
  if (a.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "maps: expected at most ", std::numeric_limits<int>::max(), " entries, got ", a.size()));
  }
  const int64_t n64 = static_cast<int64_t>(a.size());
  const size_t n = a.size();
  double sa = 0, sb = 0;
  if (absl::Status s = CheckMap("a", a, &sa); !s.ok()) return s;
  if (absl::Status s = CheckMap("b", b, &sb); !s.ok()) return s;
  if (absl::Status s = CheckSpec(spec, n64); !s.ok()) return s;

  Comparison out;
  if (stop()) return kCancelled;

  // Correlations.
  const bool ca = IsConstant(a), cb = IsConstant(b);
  if (ca || cb) {
    const std::string why = ConstantReason(ca, cb);
    out.spearman_note = why + ": Spearman undefined";
    out.kendall_note = why + ": Kendall tau-b undefined";
    out.pearson_note = why + ": Pearson undefined";
  } else {
    out.spearman = Pearson(AverageRanks(a), AverageRanks(b));
    out.kendall_tau_b = KendallTauB(a, b);
    out.pearson = Pearson(std::vector<double>(a.begin(), a.end()),
                          std::vector<double>(b.begin(), b.end()));
  }

  if (stop()) return kCancelled;
  // Cosine, L1, L2, Jensen-Shannon.
  double dot = 0, na = 0, nb = 0, l1 = 0, l2 = 0, kl_a = 0, kl_b = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = a[i], y = b[i];
    dot += x * y;
    na += x * x;
    nb += y * y;
    const double p = x / sa, q = y / sb, m = 0.5 * (p + q);
    l1 += std::abs(p - q);
    l2 += (p - q) * (p - q);
    if (p > 0) kl_a += p * std::log(p / m);
    if (q > 0) kl_b += q * std::log(q / m);
  }
  out.cosine = std::clamp(dot / (std::sqrt(na) * std::sqrt(nb)), -1.0, 1.0);
  out.l1 = l1;
  out.l2 = std::sqrt(l2);
  out.js_divergence = std::max(0.0, 0.5 * (kl_a + kl_b));

  // Top sets.
  int k = spec.top_k;
  if (k == 0 && spec.top_mass == 0) k = static_cast<int>((n + 9) / 10);
  std::vector<uint8_t> ta, tb;
  out.top_k_used_a = TopSet(a, k, spec.top_mass, &ta);
  out.top_k_used_b = TopSet(b, k, spec.top_mass, &tb);
  int inter = 0, uni = 0;
  for (size_t i = 0; i < n; ++i) {
    inter += ta[i] & tb[i];
    uni += ta[i] | tb[i];
  }
  out.top_k_iou = static_cast<double>(inter) / uni;  // uni >= 1: sets are non-empty

  // Grid metrics.
  if (spec.grid_h > 0) {
    if (stop() || !Ssim(a, b, sa, sb, spec.grid_h, spec.grid_w, spec.ssim_window, cancelled, &out) ||
        stop()) {
      return kCancelled;
    }
    Emd(a, b, sa, sb, spec.grid_h, spec.grid_w, spec.emd_max_arcs, &out);
    CentreOfMass(a, b, sa, sb, spec.grid_w, &out);
  } else {
    out.ssim_note = NoGridNote("SSIM");
    out.emd_note = NoGridNote("EMD");
    out.com_note = NoGridNote("centre of mass");
  }

  // Region shares.
  if (!spec.region.empty()) {
    double ra = 0, rb = 0;
    for (size_t i = 0; i < n; ++i) {
      if (spec.region[i] != 0) {
        ra += a[i];
        rb += b[i];
      }
    }
    out.region_share_a = ra / sa;
    out.region_share_b = rb / sb;
  }

  out.difference.resize(n);
  for (size_t i = 0; i < n; ++i) out.difference[i] = b[i] - a[i];
  return out;
}

int64_t CompareWorkingBytes(int64_t n, const CompareSpec& spec) {
  // Per entry: ranks (2 x 8), index and order vectors (~4 x 4), masks, floats,
  // EMD units and fractions (3 x 8), the difference map (4): <= 96 bytes.
  int64_t bytes = 96 * n;
  if (spec.grid_h > 0) {
    bytes += 2 * 40 * n;  // SSIM's per-cell and per-row window moments
    // Worst case: half the cells surplus, half deficit, capped by emd_max_arcs.
    const int64_t arcs = std::min<int64_t>((n / 2) * (n - n / 2), spec.emd_max_arcs);
    // LEMON's graph (16) and NetworkSimplex arrays (~60), the cost map and
    // exact distances (16) per arc; ~150 bytes per node.
    bytes += 96 * arcs + 150 * n;
  }
  return bytes;
}

double CompareCost(int64_t n, const CompareSpec& spec) {
  const double x = static_cast<double>(n);
  // Ranks, Kendall's merge sort, top sets: a few sorts of n entries.
  double cost = 40.0 * x * std::log2(x + 2.0);
  if (spec.grid_h > 0) {
    const double win = spec.ssim_window, h = spec.grid_h, w = spec.grid_w;
    if (h >= win && w >= win) {
      // The row pass sums win cells for h x (w - win + 1) outputs, the column
      // pass win rows for (h - win + 1) x (w - win + 1): five moments each.
      const double ow = w - win + 1, oh = h - win + 1;
      cost += 5.0 * win * ow * (h + oh);
    }
    const double arcs = std::min<double>(x / 2 * (x - x / 2), static_cast<double>(spec.emd_max_arcs));
    cost += 150.0 * arcs;  // network simplex on the surplus/deficit arcs
  }
  return cost;
}

}  // namespace attnroll::analysis
