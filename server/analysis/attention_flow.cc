#include "server/analysis/attention_flow.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace attnroll::analysis {
namespace {

// Residual capacities at or below this are zero. Inputs are probabilities
// (<= 1) in float, so rounding noise of double sums is ~1e-16.
constexpr double kEps = 1e-15;
// A flow within this fraction of its upper bound is the bound.
constexpr double kBoundTol = 1e-12;
constexpr int kDead = std::numeric_limits<int>::min();
// A layer with fewer than m / kSparse live nodes is scanned through its list.
constexpr int kSparse = 8;


// Admissible-arc search over a row: the first j in [from, m) with
// lev[j] == want (kUnvisited: lev[j] < 0) and cap[j] - f[j] > kEps, or m.
// The scans are the solver's inner loop: AVX2 looks at 8 arcs at a time.
template <bool kUnvisited>
inline bool ArcOk(const int* lev, int want, const float* cap, const double* f, int j) {
  const bool level_ok = kUnvisited ? lev[j] < 0 : lev[j] == want;
  return level_ok && static_cast<double>(cap[j]) - f[j] > kEps;
}

template <bool kUnvisited>
inline int FindArc(const int* lev, int want, const float* cap, const double* f, int from, int m) {
  int j = from;
#ifdef __AVX2__
  const __m256i wantv = _mm256_set1_epi32(kUnvisited ? 0 : want);
  const __m256d epsv = _mm256_set1_pd(kEps);
  for (; j + 8 <= m; j += 8) {
    const __m256i lv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lev + j));
    const __m256i eq = kUnvisited ? _mm256_cmpgt_epi32(wantv, lv) : _mm256_cmpeq_epi32(lv, wantv);
    const int lmask = _mm256_movemask_ps(_mm256_castsi256_ps(eq));
    if (lmask == 0) continue;
    const __m256 c = _mm256_loadu_ps(cap + j);
    const __m256d r0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(c)), _mm256_loadu_pd(f + j));
    const __m256d r1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(c, 1)), _mm256_loadu_pd(f + j + 4));
    const int rmask = _mm256_movemask_pd(_mm256_cmp_pd(r0, epsv, _CMP_GT_OQ)) |
                      (_mm256_movemask_pd(_mm256_cmp_pd(r1, epsv, _CMP_GT_OQ)) << 4);
    const int mask = lmask & rmask;
    if (mask != 0) return j + __builtin_ctz(static_cast<unsigned>(mask));
  }
#endif
  for (; j < m; ++j)
    if (ArcOk<kUnvisited>(lev, want, cap, f, j)) return j;
  return m;
}

}  // namespace

AttentionFlow::AttentionFlow(const std::vector<MatrixF>& layers)
    : layers_(layers), num_layers_(static_cast<int>(layers.size())) {
  m_ = layers.empty() ? 0 : static_cast<int>(layers[0].rows());
  for (const MatrixF& a : layers) {
    assert(a.rows() == m_ && a.cols() == m_);
    (void)a;
  }
  const int L = num_layers_, m = m_;
  colsum_first_.assign(m, 0.0);
  rowsum_last_.assign(m, 0.0);
  if (L > 0) {
    const MatrixF& first = layers.front();
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < m; ++j) colsum_first_[j] += first(i, j);
    const MatrixF& last = layers.back();
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int j = 0; j < m; ++j) s += last(i, j);
      rowsum_last_[i] = s;
    }
  }
  const size_t nodes = static_cast<size_t>(L + 1) * m;
  flow_.assign(static_cast<size_t>(L) * m * m, 0.0);
  back_.resize(nodes);
  level_.assign(nodes, 0);
  cursor_.assign(nodes, 0);
  queue_.resize(nodes);
  path_node_.resize(nodes + 1);
  path_flow_.resize(nodes + 1);
  path_cap_.resize(nodes + 1);
  node_layer_.resize(nodes);
  node_index_.resize(nodes);
  for (size_t v = 0; v < nodes; ++v) {
    node_layer_[v] = static_cast<int>(v / m);
    node_index_[v] = static_cast<int>(v % m);
  }
  alive_count_.assign(L + 1, 0);
  alive_valid_.assign(L + 1, 0);
  alive_list_.resize(L + 1);
}

int64_t AttentionFlow::WorkingBytes(int num_layers, int m) {
  const int64_t nodes = static_cast<int64_t>(num_layers + 1) * m;
  return static_cast<int64_t>(num_layers) * m * m * (sizeof(double) + sizeof(int64_t) / 4) +
         nodes * (4 * sizeof(int) + 2 * sizeof(int64_t) + sizeof(std::vector<int>));
}

double AttentionFlow::Bound(int source, int sink) const {
  return std::min(colsum_first_[source], rowsum_last_[sink]);
}

void AttentionFlow::ResetFlows() {
  for (double* f : touched_) *f = 0.0;
  touched_.clear();
  for (int v : touched_nodes_) back_[v].clear();
  touched_nodes_.clear();
}

double AttentionFlow::MaxFlow(int source, int sink) {
  assert(source >= 0 && source < m_ && sink >= 0 && sink < m_);
  stats_ = Stats();
  if (num_layers_ == 0) return source == sink ? std::numeric_limits<double>::infinity() : 0.0;
  const double value = Solve(source, sink);
  ResetFlows();
  return value;
}

bool AttentionFlow::FlowRow(int sink, double* out, const std::function<bool()>& cancelled) {
  for (int j = 0; j < m_; ++j) {
    if (cancelled && cancelled()) return false;
    out[j] = MaxFlow(j, sink);
  }
  return true;
}

// Levels by BFS from src over the residual graph. Returns whether snk is
// reachable; nodes farther than snk keep level -1 (never admissible).
bool AttentionFlow::Bfs(int src, int snk) {
  const int m = m_, L = num_layers_;
  const size_t mm = static_cast<size_t>(m) * m;
  std::fill(level_.begin(), level_.end(), -1);
  // Unvisited nodes per layer: a row into a fully visited layer is skipped.
  std::fill(alive_count_.begin(), alive_count_.end(), m);
  level_[src] = 0;
  --alive_count_[node_layer_[src]];
  int head = 0, tail = 0;
  queue_[tail++] = src;
  int snk_level = std::numeric_limits<int>::max();
  int64_t scanned = 0;
  while (head < tail) {
    const int v = queue_[head++];
    const int lv = level_[v];
    if (lv >= snk_level - 1) break;  // BFS order: the rest is at least as far
    const int l = node_layer_[v], i = node_index_[v];
    if (l >= 1 && alive_count_[l - 1] > 0) {
      const float* cap = layers_[l - 1].data() + static_cast<size_t>(i) * m;
      const double* f = flow_.data() + (l - 1) * mm + static_cast<size_t>(i) * m;
      int* lev = level_.data() + static_cast<size_t>(l - 1) * m;
      if (l == 1) {
        const int j = snk;  // only the sink matters on layer 0
        if (lev[j] < 0 && cap[j] - f[j] > kEps) {
          lev[j] = lv + 1;
          snk_level = lv + 1;
        }
        ++scanned;
      } else {
        int found = 0;
        for (int j = FindArc<true>(lev, 0, cap, f, 0, m); j < m;
             j = FindArc<true>(lev, 0, cap, f, j + 1, m)) {
          lev[j] = lv + 1;
          queue_[tail++] = (l - 1) * m + j;
          ++found;
        }
        alive_count_[l - 1] -= found;
        scanned += m;
      }
    }
    if (l < L && alive_count_[l + 1] > 0) {
      const double* f = flow_.data() + static_cast<size_t>(l) * mm + i;
      int* lev = level_.data() + static_cast<size_t>(l + 1) * m;
      int found = 0;
      for (int k : back_[v]) {
        if (lev[k] < 0 && f[static_cast<size_t>(k) * m] > kEps) {
          lev[k] = lv + 1;
          queue_[tail++] = (l + 1) * m + k;
          ++found;
        }
      }
      alive_count_[l + 1] -= found;
      scanned += back_[v].size();
    }
  }
  stats_.arcs_scanned += scanned;
  return level_[snk] >= 0;
}

// Max flow from node (L, sink) down to node (0, source) in the reversed graph.
double AttentionFlow::Solve(int source, int sink) {
  const int m = m_, L = num_layers_;
  const size_t mm = static_cast<size_t>(m) * m;
  const int src = L * m + sink;  // reversed: flow starts at the output node
  const int snk = source;        // node (0, source)
  const double bound = Bound(source, sink);
  if (!(bound > kEps)) return 0.0;  // at most kEps: nothing to route
  const double target = bound * (1.0 - kBoundTol);
  double total = 0.0;

  for (int phase = 0;; ++phase) {
    if (phase == 0) {
      // No flow yet: the residual graph is the layered DAG itself.
      for (int l = 0; l <= L; ++l)
        std::fill(level_.begin() + static_cast<size_t>(l) * m,
                  level_.begin() + static_cast<size_t>(l + 1) * m, L - l);
    } else if (!Bfs(src, snk)) {
      break;
    }
    ++stats_.phases;
    std::fill(cursor_.begin(), cursor_.end(), -1);
    for (int l = 0; l <= L; ++l) {
      int n = 0;
      for (int i = 0; i < m; ++i) n += level_[static_cast<size_t>(l) * m + i] >= 0;
      alive_count_[l] = n;
      alive_valid_[l] = 0;
    }
    const int snk_level = level_[snk];
    int depth = 0;
    int v = src;
    path_node_[0] = src;
    int64_t scanned = 0;
    for (;;) {
      if (v == snk) {
        // Augment by the bottleneck; retreat to the tail of its first arc.
        double b = std::numeric_limits<double>::infinity();
        int cut = 0;
        for (int d = 0; d < depth; ++d) {
          const double c = path_cap_[d];
          const double r = c >= 0 ? c - *path_flow_[d] : *path_flow_[d];
          if (r < b) {
            b = r;
            cut = d;
          }
        }
        for (int d = 0; d < depth; ++d) {
          double* f = path_flow_[d];
          const double c = path_cap_[d];
          if (c >= 0) {
            if (*f == 0.0) {
              // First flow on (l, i) -> (l-1, j): a back arc of (l-1, j).
              touched_.push_back(f);
              const int w = path_node_[d + 1];
              if (back_[w].empty()) touched_nodes_.push_back(w);
              back_[w].push_back(node_index_[path_node_[d]]);
            }
            *f = d == cut ? c : *f + b;
          } else {
            *f = d == cut ? 0.0 : *f - b;
          }
        }
        total += b;
        ++stats_.augmentations;
        if (total >= target) {
          stats_.arcs_scanned += scanned;
          stats_.hit_bound = true;
          return bound;
        }
        depth = cut;
        v = path_node_[cut];
        continue;
      }
      // Advance along the first admissible arc from v's cursor.
      const int l = node_layer_[v], i = node_index_[v];
      const int want = level_[v] + 1;
      int& cur = cursor_[v];
      int w = -1;
      double* arc_flow = nullptr;
      double arc_cap = -1.0;
      if (l >= 1 && cur < m) {
        const float* cap = layers_[l - 1].data() + static_cast<size_t>(i) * m;
        double* f = flow_.data() + (l - 1) * mm + static_cast<size_t>(i) * m;
        const int* lev = level_.data() + static_cast<size_t>(l - 1) * m;
        int j = -1;
        if (l == 1) {
          // Layer 0: only the sink leads anywhere.
          if (cur <= snk && lev[snk] == want && cap[snk] - f[snk] > kEps) {
            j = snk;
          }
          cur = j >= 0 ? j : m;
          ++scanned;
        } else if (cur < 0) {
          // The diagonal first: the residual connection makes it the
          // widest arc of most rows. Then every arc in index order.
          ++scanned;
          if (lev[i] == want && cap[i] - f[i] > kEps) {
            j = i;
          } else {
            cur = 0;
          }
        }
        if (j < 0 && l > 1 && alive_count_[l - 1] * kSparse < m) {
          // Few live nodes below: look only at them (sorted by index).
          std::vector<int>& list = alive_list_[l - 1];
          if (!alive_valid_[l - 1] ||
              list.size() > 2 * static_cast<size_t>(alive_count_[l - 1]) + 8) {
            list.clear();
            for (int jj = 0; jj < m; ++jj)
              if (lev[jj] >= 0) list.push_back(jj);
            alive_valid_[l - 1] = 1;
            scanned += m;
          }
          const int n = static_cast<int>(list.size());
          int c = static_cast<int>(std::lower_bound(list.begin(), list.end(), cur) - list.begin());
          const int c0 = c;
          for (; c < n; ++c) {
            const int jj = list[c];
            if (lev[jj] == want && cap[jj] - f[jj] > kEps) break;
          }
          scanned += c - c0 + 1;
          j = c < n ? list[c] : -1;
          cur = j >= 0 ? j : m;
        } else if (j < 0 && l > 1) {
          const int jj = FindArc<false>(lev, want, cap, f, cur, m);
          scanned += jj - cur + (jj < m);
          cur = jj;
          if (jj < m) j = jj;
        }
        if (j >= 0) {
          w = (l - 1) * m + j;
          arc_flow = f + j;
          arc_cap = cap[j];
        }
      }
      if (w < 0 && l < L) {
        const std::vector<int>& back = back_[v];
        double* f = flow_.data() + static_cast<size_t>(l) * mm + i;
        const int* lev = level_.data() + static_cast<size_t>(l + 1) * m;
        const int k0 = std::max(cur, m) - m;  // cur >= m after the forward arcs
        int k = k0;
        const int n = static_cast<int>(back.size());
        for (; k < n; ++k) {
          const int u = back[k];
          if (lev[u] == want && f[static_cast<size_t>(u) * m] > kEps) break;
        }
        scanned += k - k0 + (k < n);
        cur = m + k;
        if (k < n) {
          w = (l + 1) * m + back[k];
          arc_flow = f + static_cast<size_t>(back[k]) * m;
          arc_cap = -1.0;
        }
      }
      if (w >= 0) {
        // Nodes at or beyond the sink's level cannot lead to it.
        if (w != snk && level_[w] >= snk_level) {
          Kill(w);
          continue;
        }
        path_flow_[depth] = arc_flow;
        path_cap_[depth] = arc_cap;
        ++depth;
        path_node_[depth] = w;
        v = w;
        continue;
      }
      // Dead end: retire v and step back.
      Kill(v);
      if (depth == 0) break;
      --depth;
      v = path_node_[depth];
      ++cursor_[v];
    }
    stats_.arcs_scanned += scanned;
  }
  return std::min(total, bound);
}


double EstimateFlowCost(int num_layers, int m, int num_sinks) {
  // A pair scans on the order of L m^2 arcs in the worst structured cases
  // measured (one full residual graph); most pairs stop far earlier.
  return static_cast<double>(num_sinks) * m * static_cast<double>(num_layers) * m * m;
}

}  // namespace attnroll::analysis
