// Exact attention flow: Dinic's algorithm specialised to the layered DAG.
//
// Orientation. Internally the graph is reversed, as Abnar & Zuidema build it:
// arcs (l, i) -> (l-1, j) with capacity At_l[i, j], flow from the output node
// (L, sink) down to the input node (0, source). Reversing every arc keeps every
// max-flow value, and makes the arcs out of a node a contiguous row of At_l, so
// the input matrices are used in place (no transposed copy).
//
// Residual graph. flow_ holds the flow of every arc (L m^2 doubles, reset
// sparsely after each pair: only touched entries). The backward residual arc
// (l-1, j) -> (l, i) exists while that arc carries flow; back_[(l-1, j)] lists
// those i (an entry whose flow went back to zero is skipped, and dropped by
// the next BFS). Phase 0 uses no backward arc, so the lists are only built,
// from the touched entries, before the first BFS (BuildBack), and kept up to
// date from then on.
//
// Phases. Phase 0 needs no BFS: with no flow, the distance of (l, i) from the
// top is L - l. Later phases get levels by BFS from the top node (stopping at
// the sink's level). In each phase a multi-push DFS with current-arc pointers
// sends a blocking flow; a node with no admissible arc left is retired for the
// phase. The DFS tries the diagonal arc first (the residual connection makes it
// the widest of most rows), then the arc into the source's own column (the
// flow has to end up there: nearly all of it reaches (0, source) down that
// token's diagonal), then the rest of the row in index order. The diagonal's
// capacities are kept in one contiguous array (diag_), not read from the
// layers: every node the DFS enters asks for its own, and in the layers each
// was a cache miss (on the Intel VM of 2 December, two sets of 3 alternating
// rounds: BERT-base CLS row 1-7% faster on one core, 2-5% on two; ViT-B/16's
// 3-4%). A transposed copy of every layer, for the source's column too,
// measured slower (BERT-base 251 against 227 ms: 12 MB more per solver). Row scans
// look at 8 arcs per AVX2 instruction; when few nodes of the layer below are
// still live (DFS) or unvisited (BFS), a list of them is walked instead of the
// row, which keeps both the death of a layer and the BFS after it cheap.
//
// Layer 2 (LeafPush). When a layer-2 node's admissible arcs can only lead, one
// step further, to the sink (always in phase 0), the DFS does not push frames
// for the layer-1 node and the sink: the node walks its row and sends each
// amount straight on through (1, j) -> (0, source), whose capacities and
// flows are kept for the pair in two contiguous arrays (dcap_, dflow_; the
// capacities come from a transposed copy of At_1, and flow_ is written too,
// for the BFS). That is half the frames of a typical augmenting path (most
// end by saturating an arc of layers 2-5), and no strided read of column
// `source` per layer-1 node.
//
// Early exit. Every flow is at most min(colsum At_1[:, source], rowsum
// At_L[sink, :]) (the source's and the sink's arcs); the root of the DFS asks
// for exactly that much, so a pair that reaches its bound stops at once, with
// no cut proof. Otherwise the last BFS, which cannot reach the sink, is the
// proof (its visited set is a minimum cut's source side).
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
// (<= 1) in float, so the rounding noise of double sums is ~1e-16; an arc of
// capacity <= kEps is absent, which moves a flow by at most its capacity.
constexpr double kEps = 1e-15;
// A flow within this fraction of its upper bound is the bound.
constexpr double kBoundTol = 1e-12;
// Level of a node retired for the current phase.
constexpr int kDead = std::numeric_limits<int>::min();
// A layer with fewer than m / kSparse live nodes is searched through its list.
constexpr int kSparse = 8;

// The first j in [from, m) with lev[j] == want (kUnvisited: lev[j] < 0) and
// cap[j] - f[j] > kEps, or m.
template <bool kUnvisited>
inline int FindArc(const int* lev, int want, const float* cap, const double* f, int from, int m) {
  int j = from;
#ifdef __AVX2__
  const __m256i wantv = _mm256_set1_epi32(kUnvisited ? 0 : want);
  const __m256d epsv = _mm256_set1_pd(kEps);
  for (; j + 8 <= m; j += 8) {
    const __m256i lv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lev + j));
    const __m256i ok = kUnvisited ? _mm256_cmpgt_epi32(wantv, lv) : _mm256_cmpeq_epi32(lv, wantv);
    const int lmask = _mm256_movemask_ps(_mm256_castsi256_ps(ok));
    if (lmask == 0) continue;
    const __m256 c = _mm256_loadu_ps(cap + j);
    const __m256d r0 =
        _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(c)), _mm256_loadu_pd(f + j));
    const __m256d r1 =
        _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(c, 1)), _mm256_loadu_pd(f + j + 4));
    const int rmask = _mm256_movemask_pd(_mm256_cmp_pd(r0, epsv, _CMP_GT_OQ)) |
                      (_mm256_movemask_pd(_mm256_cmp_pd(r1, epsv, _CMP_GT_OQ)) << 4);
    const int mask = lmask & rmask;
    if (mask != 0) return j + __builtin_ctz(static_cast<unsigned>(mask));
  }
#endif
  for (; j < m; ++j) {
    const bool level_ok = kUnvisited ? lev[j] < 0 : lev[j] == want;
    if (level_ok && static_cast<double>(cap[j]) - f[j] > kEps) return j;
  }
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
  node_layer_.resize(nodes);
  node_index_.resize(nodes);
  for (size_t v = 0; v < nodes; ++v) {
    node_layer_[v] = static_cast<int>(v / m);
    node_index_[v] = static_cast<int>(v % m);
  }
  frame_node_.resize(nodes + 1);
  frame_limit_.resize(nodes + 1);
  frame_sent_.resize(nodes + 1);
  frame_flow_.resize(nodes + 1);
  frame_cap_.resize(nodes + 1);
  live_count_.assign(L + 1, 0);
  live_valid_.assign(L + 1, 0);
  live_list_.resize(L + 1);
  uses_.assign(m, 0);
  split_ = L >= 4 ? (2 * L + 2) / 3 : 0;  // L = 12: 8
  dcap_.assign(m, 0.0);
  dflow_.assign(m, 0.0);
  // The diagonal of every layer, contiguous: the DFS tries it first at
  // every node it enters, and each would otherwise be a cache miss.
  diag_.resize(static_cast<size_t>(L) * m);
  for (int l = 0; l < L; ++l)
    for (int i = 0; i < m; ++i) diag_[static_cast<size_t>(l) * m + i] = layers[l](i, i);
  if (L >= 2) {
    at1t_.resize(static_cast<size_t>(m) * m);
    const MatrixF& first = layers.front();
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < m; ++j) at1t_[static_cast<size_t>(j) * m + i] = first(i, j);
  }
}

// back_ and touched_nodes_ from touched_ (every entry of flow_ made non-zero,
// each once: phase 0 only adds flow).
void AttentionFlow::BuildBack() {
  const size_t m = static_cast<size_t>(m_), mm = m * m;
  for (double* p : touched_) {
    const size_t o = static_cast<size_t>(p - flow_.data());
    const size_t lm1 = o / mm, i = (o % mm) / m, j = o % m;
    const int head = static_cast<int>(lm1 * m + j);
    if (back_[head].empty()) touched_nodes_.push_back(head);
    back_[head].push_back(static_cast<int>(i));
  }
  back_valid_ = true;
}

// Node v on layer 2 whose admissible arcs all lead to layer-1 nodes one step
// from snk: sends up to `limit` down its row, each amount straight on to snk.
double AttentionFlow::LeafPush(int v, int snk, double limit, double tol) {
  const size_t m = static_cast<size_t>(m_);
  double* f1 = flow_.data();
  const double* dcap = dcap_.data();
  double* dflow = dflow_.data();
  double sent = 0.0;
  Arc arc;
  while (limit - sent > tol) {
    if (!NextArc(v, snk, &arc)) {
      Kill(v);
      return sent;
    }
    const int u = arc.head;
    if (arc.cap < 0) {  // a back arc up to layer 3: cannot reach snk in one step
      Kill(u);
      continue;
    }
    const int j = node_index_[u];
    const double cs = dcap[j], fs0 = dflow[j];
    const double rs = cs - fs0;
    if (!(rs > kEps)) {
      Kill(u);
      continue;
    }
    double* f = arc.flow;
    const double c = arc.cap;
    const double r = c - *f;
    const double amt = std::min(std::min(limit - sent, r), rs);
    ++stats_.augmentations;
    if (*f == 0.0) {
      touched_.push_back(f);
      if (back_valid_) {
        if (back_[u].empty()) touched_nodes_.push_back(u);
        back_[u].push_back(node_index_[v]);
      }
    }
    *f = amt >= r ? c : *f + amt;
    double* fs = f1 + static_cast<size_t>(j) * m + snk;
    if (fs0 == 0.0) {
      touched_.push_back(fs);
      if (back_valid_) {
        if (back_[snk].empty()) touched_nodes_.push_back(snk);
        back_[snk].push_back(j);
      }
    }
    const double fs1 = amt >= rs ? cs : fs0 + amt;
    dflow[j] = fs1;
    *fs = fs1;
    if (!(cs - fs1 > kEps)) Kill(u);
    sent += amt;
  }
  return sent;
}

namespace {

// Adds a sub-solver's search counters (the split's lower and upper solves)
// to the pair's.
void AddSearchCounts(const AttentionFlow::Stats& from, AttentionFlow::Stats* to) {
  to->phases += from.phases;
  to->augmentations += from.augmentations;
  to->arcs_scanned += from.arcs_scanned;
}

int64_t SolverBytes(int num_layers, int m) {
  const int64_t nodes = static_cast<int64_t>(num_layers + 1) * m;
  const int64_t arcs = static_cast<int64_t>(num_layers) * m * m;
  // flow_ plus, at worst, every arc touched (touched_ pointer + back_ entry).
  // Plus the transposed At_1 (m^2 floats), the layers' diagonals (L m
  // floats) and two m-arrays of doubles.
  return arcs * static_cast<int64_t>(sizeof(double) + sizeof(double*) + sizeof(int)) +
         static_cast<int64_t>(m) * m * static_cast<int64_t>(sizeof(float)) +
         static_cast<int64_t>(num_layers) * m * static_cast<int64_t>(sizeof(float)) +
         2 * static_cast<int64_t>(m) * static_cast<int64_t>(sizeof(double)) +
         nodes * static_cast<int64_t>(6 * sizeof(int) + 3 * sizeof(double) + sizeof(double*) +
                                      sizeof(std::vector<int>)) +
         (num_layers + 1) * static_cast<int64_t>(m) * static_cast<int64_t>(sizeof(int));
}
}  // namespace

int64_t AttentionFlow::WorkingBytes(int num_layers, int m, bool several_sinks) {
  int64_t bytes = SolverBytes(num_layers, m) + static_cast<int64_t>(m) * sizeof(int);
  if (several_sinks && num_layers >= 4) {
    // The split certificate's solvers (b + 1 and L - b + 1 layers), their
    // copies of the layers (L + 2 matrices) and m doubles per source.
    const int b = (2 * num_layers + 2) / 3;
    const int64_t mm = static_cast<int64_t>(m) * m;
    bytes += SolverBytes(b + 1, m) + SolverBytes(num_layers - b + 1, m) +
             (num_layers + 2) * mm * static_cast<int64_t>(sizeof(float)) +
             mm * static_cast<int64_t>(sizeof(double));
  }
  return bytes;
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
  double value;
  if (split_ > 0 && TrySplit(source, sink, &value)) return value;
  value = Solve(source, sink);
  ResetFlows();
  return value;
}

// Split certificate. For a layer b (split_), let G be a flow from (0, source)
// into layer b delivering y_k to (b, k) (a max flow of At_1..At_b into a super
// sink, computed once per source, on its second use), and H a flow from
// (L, sink) down to layer b that takes at most y_k out at (b, k) (the upper
// layers At_{b+1}..At_L, with y as the capacities of the last arcs). Scaling
// the paths of G that end at (b, k) by H's amount there over y_k gives a
// flow from (0, source) into layer b delivering exactly H's amounts (a part
// of a flow is a flow; the two halves use disjoint arcs), which glues to H:
// a flow from input `source` to output `sink` of H's value. When that value
// reaches the pair's bound (min(colsum, rowsum)) to within the tolerance of
// a full solve (H's own root is given what is left of it after y's
// shortfall), the bound is the max flow, exactly, without solving the pair.
// Otherwise the pair is solved in full. H's search takes ~6x less time than the
// full pair's: nearly all the augmenting paths of a pair end by saturating
// arcs of the lower layers, which G has already fanned out.
bool AttentionFlow::TrySplit(int source, int sink, double* value) {
  if (++uses_[source] < 2) return false;  // one use: G would cost as much as the pair
  if (split_tries_ >= 64 && split_hits_ * 4 < split_tries_) return false;  // seldom holds
  const int m = m_, b = split_;
  if (!lower_) {
    // Lower graph: At_1..At_b and a top layer whose row 0 feeds every (b, k)
    // with more than row k of At_b can carry (the super sink).
    lower_layers_.assign(layers_.begin(), layers_.begin() + b);
    MatrixF top = MatrixF::Zero(m, m);
    for (int k = 0; k < m; ++k) {
      double s = 0;
      for (int j = 0; j < m; ++j) s += layers_[b - 1](k, j);
      top(0, k) = static_cast<float>(2.0 * s + 1.0);
    }
    lower_layers_.push_back(std::move(top));
    auto lower = std::make_unique<AttentionFlow>(lower_layers_);
    // Upper graph: a dummy first layer (its capacities come from y) and
    // At_{b+1}..At_L. Only LeafPush reads y (dcap_); the BFS and a layer-1
    // frame see the dummy's zeros, so an upper search that would need a BFS
    // phase ends below the bound and the pair is solved in full (never a
    // wrong certificate: capacities are only ever under-read).
    upper_layers_.assign(1, MatrixF::Zero(m, m));
    upper_layers_.insert(upper_layers_.end(), layers_.begin() + b, layers_.end());
    auto upper = std::make_unique<AttentionFlow>(upper_layers_);
    split_in_.assign(m, {});
    split_in_sum_.assign(m, 0.0);
    // Set together, last: a bad_alloc above leaves the split unbuilt, not half-built.
    upper_ = std::move(upper);
    lower_ = std::move(lower);
  }
  std::vector<double>& y = split_in_[source];
  if (y.empty()) {
    lower_->stats_ = Stats();
    lower_->Solve(source, 0);
    y.resize(m);
    const double* f = lower_->flow_.data() + static_cast<size_t>(b) * m * m;  // top row 0
    double s = 0;
    for (int k = 0; k < m; ++k) s += (y[k] = f[k]);
    split_in_sum_[source] = s;
    lower_->ResetFlows();
    AddSearchCounts(lower_->stats_, &stats_);
  }
  const double bound = Bound(source, sink);
  const double tol = std::max(kEps, bound * kBoundTol);
  const double upper_bound = std::min(split_in_sum_[source], rowsum_last_[sink]);
  // H may miss upper_bound by `slack`: then the glued flow is >= bound - tol,
  // the same acceptance as a full solve's (upper_bound <= bound: y's sum is
  // at most the source's column sum).
  const double slack = tol - (bound - upper_bound);
  if (!(bound > kEps) || !(slack >= 0.0)) return false;
  ++split_tries_;
  upper_->stats_ = Stats();
  upper_->SolveWith(0, sink, y.data(), upper_bound, slack);
  upper_->ResetFlows();
  AddSearchCounts(upper_->stats_, &stats_);
  if (!upper_->stats_.hit_bound) return false;
  ++split_hits_;
  stats_.hit_bound = true;
  stats_.split = true;
  *value = bound;
  return true;
}

bool AttentionFlow::FlowRow(int sink, double* out, const std::function<bool()>& cancelled) {
  for (int j = 0; j < m_; ++j) {
    if (cancelled && cancelled()) return false;
    out[j] = MaxFlow(j, sink);
  }
  return true;
}

void AttentionFlow::Kill(int v) {
  if (level_[v] >= 0) --live_count_[node_layer_[v]];
  level_[v] = kDead;
}

// Levels by BFS from src over the residual graph. Returns whether snk is
// reachable; nodes farther than snk keep level -1 (never admissible).
bool AttentionFlow::Bfs(int src, int snk) {
  const int m = m_, L = num_layers_;
  const size_t mm = static_cast<size_t>(m) * m;
  std::fill(level_.begin(), level_.end(), -1);
  // Unvisited nodes per layer: a row into a fully visited layer is skipped.
  std::fill(live_count_.begin(), live_count_.end(), m);
  std::fill(live_valid_.begin(), live_valid_.end(), 0);
  level_[src] = 0;
  --live_count_[node_layer_[src]];
  int head = 0, tail = 0;
  queue_[tail++] = src;
  int snk_level = std::numeric_limits<int>::max();
  int64_t scanned = 0;
  while (head < tail) {
    const int v = queue_[head++];
    const int lv = level_[v];
    if (lv >= snk_level - 1) break;  // BFS order: the rest is at least as far
    const int l = node_layer_[v], i = node_index_[v];
    if (l >= 1 && live_count_[l - 1] > 0) {
      const float* cap = layers_[l - 1].data() + static_cast<size_t>(i) * m;
      const double* f = flow_.data() + (l - 1) * mm + static_cast<size_t>(i) * m;
      int* lev = level_.data() + static_cast<size_t>(l - 1) * m;
      if (l == 1) {
        // Layer 0: only the sink leads anywhere.
        if (lev[snk] < 0 && static_cast<double>(cap[snk]) - f[snk] > kEps) {
          lev[snk] = lv + 1;
          snk_level = lv + 1;
        }
        ++scanned;
      } else if (live_count_[l - 1] * kSparse < m) {
        // Few unvisited nodes left below: try only their arcs.
        std::vector<int>& list = live_list_[l - 1];
        if (!live_valid_[l - 1] || list.size() > 2 * static_cast<size_t>(live_count_[l - 1]) + 8) {
          list.clear();
          for (int j = 0; j < m; ++j)
            if (lev[j] < 0) list.push_back(j);
          live_valid_[l - 1] = 1;
          scanned += m;
        }
        int found = 0;
        for (int j : list) {
          if (lev[j] < 0 && static_cast<double>(cap[j]) - f[j] > kEps) {
            lev[j] = lv + 1;
            queue_[tail++] = (l - 1) * m + j;
            ++found;
          }
        }
        live_count_[l - 1] -= found;
        scanned += list.size();
      } else {
        int found = 0;
        for (int j = FindArc<true>(lev, 0, cap, f, 0, m); j < m;
             j = FindArc<true>(lev, 0, cap, f, j + 1, m)) {
          lev[j] = lv + 1;
          queue_[tail++] = (l - 1) * m + j;
          ++found;
        }
        live_count_[l - 1] -= found;
        scanned += m;
      }
    }
    if (l < L && !back_[v].empty()) {
      // Backward arcs; entries whose flow went back to exactly zero are dropped.
      const double* f = flow_.data() + static_cast<size_t>(l) * mm + i;
      int* lev = level_.data() + static_cast<size_t>(l + 1) * m;
      std::vector<int>& back = back_[v];
      scanned += back.size();
      size_t keep = 0;
      int found = 0;
      for (int k : back) {
        // Exactly zero: re-listed if flow comes back (see BlockingFlow).
        const double fk = f[static_cast<size_t>(k) * m];
        if (fk == 0.0) continue;
        back[keep++] = k;
        if (lev[k] < 0 && fk > kEps) {
          lev[k] = lv + 1;
          queue_[tail++] = (l + 1) * m + k;
          ++found;
        }
      }
      back.resize(keep);
      live_count_[l + 1] -= found;
    }
  }
  stats_.arcs_scanned += scanned;
  return level_[snk] >= 0;
}

// The next admissible arc out of v (level + 1, residual > kEps) from v's
// cursor, advancing the cursor. Cursor: -2 = the diagonal, -1 = the arc into
// the source's column (for nodes above layer 1), 0..m-1 = forward arc j,
// m + k = back_[v][k].
__attribute__((always_inline)) inline bool AttentionFlow::NextArc(int v, int snk, Arc* arc) {
  const int m = m_, L = num_layers_;
  const size_t mm = static_cast<size_t>(m) * m;
  const int l = node_layer_[v], i = node_index_[v];
  const int want = level_[v] + 1;
  int& cur = cursor_[v];
  int64_t scanned = 0;
  int j = -1;
  const float* cap = nullptr;
  double* f = nullptr;
  // Layer l's diagonal (the arcs (l, i) -> (l-1, i)), contiguous.
  const float* diag = l >= 1 ? diag_.data() + static_cast<size_t>(l - 1) * m : nullptr;
  if (l >= 1 && cur < m) {
    cap = layers_[l - 1].data() + static_cast<size_t>(i) * m;
    f = flow_.data() + (l - 1) * mm + static_cast<size_t>(i) * m;
    const int* lev = level_.data() + static_cast<size_t>(l - 1) * m;
    if (l == 1) {
      if (cur <= snk && lev[snk] == want && static_cast<double>(cap[snk]) - f[snk] > kEps) j = snk;
      cur = j >= 0 ? j : m;
      ++scanned;
    } else {
      if (cur == -2) {
        ++scanned;
        if (lev[i] == want && static_cast<double>(diag[i]) - f[i] > kEps) {
          j = i;
        } else {
          cur = -1;
        }
      }
      if (j < 0 && cur == -1) {
        ++scanned;
        const int jj = snk;  // the source's own column
        if (lev[jj] == want && static_cast<double>(cap[jj]) - f[jj] > kEps) {
          j = jj;
        } else {
          cur = 0;
        }
      }
      if (j < 0 && live_count_[l - 1] * kSparse < m) {
        // Few live nodes below: walk them (sorted) instead of the row.
        std::vector<int>& list = live_list_[l - 1];
        if (!live_valid_[l - 1] ||
            list.size() > 2 * static_cast<size_t>(live_count_[l - 1]) + 8) {
          list.clear();
          for (int jj = 0; jj < m; ++jj)
            if (lev[jj] >= 0) list.push_back(jj);
          live_valid_[l - 1] = 1;
          scanned += m;
        }
        const int n = static_cast<int>(list.size());
        int c = static_cast<int>(std::lower_bound(list.begin(), list.end(), cur) - list.begin());
        const int c0 = c;
        for (; c < n; ++c) {
          const int jj = list[c];
          if (lev[jj] == want && static_cast<double>(cap[jj]) - f[jj] > kEps) break;
        }
        scanned += c - c0 + 1;
        j = c < n ? list[c] : -1;
        cur = j >= 0 ? j : m;
      } else if (j < 0) {
        const int jj = FindArc<false>(lev, want, cap, f, cur, m);
        scanned += jj - cur + 1;
        cur = jj;
        if (jj < m) j = jj;
      }
    }
  }
  stats_.arcs_scanned += scanned;
  if (j >= 0) {
    arc->head = (l - 1) * m + j;
    arc->flow = f + j;
    arc->cap = j == i ? diag[i] : cap[j];  // the same value; diag's line is in cache
    return true;
  }
  if (l < L) {
    const std::vector<int>& back = back_[v];
    double* fb = flow_.data() + static_cast<size_t>(l) * mm + i;
    const int* lev = level_.data() + static_cast<size_t>(l + 1) * m;
    const int k0 = std::max(cur, m) - m;
    int k = k0;
    const int n = static_cast<int>(back.size());
    for (; k < n; ++k) {
      const int u = back[k];
      if (lev[u] == want && fb[static_cast<size_t>(u) * m] > kEps) break;
    }
    stats_.arcs_scanned += k - k0 + 1;
    cur = m + k;
    if (k < n) {
      arc->head = (l + 1) * m + back[k];
      arc->flow = fb + static_cast<size_t>(back[k]) * m;
      arc->cap = -1.0;
      return true;
    }
  }
  return false;
}

// Sends up to `limit` from src to snk along admissible arcs of the current
// level graph (a multi-push DFS, iterative: frame d holds the node at depth
// d, how much its parent asked of it, how much it has sent so far, and the
// arc it was entered by). Returns the amount sent.
double AttentionFlow::BlockingFlow(int src, int snk, double limit, double tol) {
  const int snk_level = level_[snk];
  int d = 0;
  frame_node_[0] = src;
  frame_limit_[0] = limit;
  frame_sent_[0] = 0.0;
  for (;;) {
    const int v = frame_node_[d];
    double ret;
    if (v == snk) {
      ret = frame_limit_[d];
      ++stats_.augmentations;
    } else if (frame_limit_[d] - frame_sent_[d] <= (d == 0 ? tol : 0.0)) {
      // The root stops within tol of what it asks; a node below sends all it
      // was asked. (Its limit can be an arc's residual below tol: stopping
      // there would offer the same arc again and again, for ever.)
      ret = frame_sent_[d];
    } else if (node_layer_[v] == 2 && snk_level == level_[v] + 2) {
      ret = frame_sent_[d] +
            LeafPush(v, snk, frame_limit_[d] - frame_sent_[d], d == 0 ? tol : 0.0);
    } else {
      Arc arc;
      bool found = false;
      while (NextArc(v, snk, &arc)) {
        // Nodes at the sink's level (other than the sink) lead nowhere.
        if (arc.head != snk && level_[arc.head] >= snk_level) {
          Kill(arc.head);
          continue;
        }
        found = true;
        break;
      }
      if (found) {
        const double r = arc.cap >= 0 ? arc.cap - *arc.flow : *arc.flow;
        ++d;
        frame_node_[d] = arc.head;
        frame_limit_[d] = std::min(frame_limit_[d - 1] - frame_sent_[d - 1], r);
        frame_sent_[d] = 0.0;
        frame_flow_[d] = arc.flow;
        frame_cap_[d] = arc.cap;
        continue;
      }
      Kill(v);  // no admissible arc left: retired for this phase
      ret = frame_sent_[d];
    }
    if (d == 0) return ret;
    if (ret > 0) {
      // Apply `ret` on the arc into frame d; saturate exactly when it is all.
      double* f = frame_flow_[d];
      const double c = frame_cap_[d];
      if (c >= 0) {
        if (*f == 0.0) {
          // First flow on (l, i) -> (l-1, j): a back arc of (l-1, j).
          touched_.push_back(f);
          if (back_valid_) {
            const int head = frame_node_[d];
            if (back_[head].empty()) touched_nodes_.push_back(head);
            back_[head].push_back(node_index_[frame_node_[d - 1]]);
          }
        }
        *f = ret >= c - *f ? c : *f + ret;
      } else {
        *f = ret >= *f ? 0.0 : *f - ret;
      }
      frame_sent_[d - 1] += ret;
    }
    --d;
  }
}

double AttentionFlow::Solve(int source, int sink) {
  const double bound = Bound(source, sink);
  return SolveWith(source, sink, nullptr, bound, std::max(kEps, bound * kBoundTol));
}

double AttentionFlow::SolveWith(int source, int sink, const double* dcap, double bound,
                                double tol) {
  const int m = m_, L = num_layers_;
  const int src = L * m + sink;  // reversed: flow starts at the output node
  const int snk = source;        // node (0, source)
  if (!(bound > kEps)) return 0.0;  // at most kEps: nothing to route
  double total = 0.0;
  back_valid_ = false;  // built by the first BFS (phase 0 uses no backward arc)
  if (L >= 2) {
    if (dcap != nullptr) {
      std::copy(dcap, dcap + m, dcap_.begin());
    } else {
      const float* t = at1t_.data() + static_cast<size_t>(source) * m;
      for (int j = 0; j < m; ++j) dcap_[j] = t[j];
    }
    std::fill(dflow_.begin(), dflow_.end(), 0.0);
  }
  for (int phase = 0;; ++phase) {
    if (phase == 0) {
      // No flow yet: the residual graph is the layered DAG itself.
      for (int l = 0; l <= L; ++l)
        std::fill(level_.begin() + static_cast<size_t>(l) * m,
                  level_.begin() + static_cast<size_t>(l + 1) * m, L - l);
    } else {
      if (!back_valid_) BuildBack();  // the BFS needs the backward arcs
      if (!Bfs(src, snk)) break;      // no augmenting path: total is the max flow
    }
    ++stats_.phases;
    std::fill(cursor_.begin(), cursor_.end(), -2);
    for (int l = 0; l <= L; ++l) {
      const int* lev = level_.data() + static_cast<size_t>(l) * m;
      int n = 0;
      for (int i = 0; i < m; ++i) n += lev[i] >= 0;
      live_count_[l] = n;
      live_valid_[l] = 0;
    }
    total += BlockingFlow(src, snk, bound - total, tol);
    if (bound - total <= tol) {
      stats_.hit_bound = true;
      return bound;
    }
    // Given last-hop capacities: phase 0 only (the BFS reads At_1 itself).
    if (dcap != nullptr) break;
  }
  return std::min(total, bound);
}

double EstimateFlowCost(int num_layers, int m, int num_sinks) {
  // One full scan of the graph (L m^2 arcs) per pair; see the header for how
  // measured run times compare.
  return static_cast<double>(num_sinks) * m * static_cast<double>(num_layers) * m * m;
}

}  // namespace attnroll::analysis
