// Exact attention flow against hand-derived values, closed forms, LEMON's
// Preflow (an independent exact max-flow) and networkx as Abnar & Zuidema run
// it (tests/analysis/networkx_flow_reference.py).
//
// The attention is STRUCTURED, as real models give it: i.i.d. softmax rows make
// every flow equal min(column sum of At_1, 1) (tested on its own), so the
// generators below mix sink tokens, a CLS sink, self heads, local (band) heads,
// bottleneck layers (every query attends to 1-2 tokens), pruned rows (exact
// zeros) and no-residual layers, and the suite checks that many pairs end with
// a cut proof rather than at the bound.
#include "server/analysis/attention_flow.h"
#include "tests/analysis/lemon_flow_testutil.h"
#include "tests/testutil/run_command.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#ifndef ATTNROLL_SOURCE_DIR
#error "ATTNROLL_SOURCE_DIR must name the source tree (set by tests/CMakeLists.txt)"
#endif

namespace attnroll::analysis {
namespace {

// ---- attention generators -----------------------------------------------------

MatrixF Mat(std::initializer_list<std::initializer_list<float>> rows) {
  MatrixF a(static_cast<int>(rows.size()), static_cast<int>(rows.begin()->size()));
  int i = 0;
  for (const auto& r : rows) {
    int j = 0;
    for (float v : r) a(i, j++) = v;
    ++i;
  }
  return a;
}

void NormalizeRows(MatrixF& a) {
  for (int i = 0; i < a.rows(); ++i) {
    const double s = a.row(i).cast<double>().sum();
    if (s > 0) a.row(i) /= static_cast<float>(s);
  }
}

// The service's residual step: (1 - r) A + r I, rows renormalised.
MatrixF Residual(const MatrixF& a, float r) {
  MatrixF at = (1.0f - r) * a + r * MatrixF::Identity(a.rows(), a.cols());
  NormalizeRows(at);
  return at;
}

enum class Head { kRandom, kClsSink, kTokenSink, kSelf, kLocal, kBottleneck, kPeaked };

// One head: softmax of N(0, 1) logits plus the structure's bonus.
MatrixF MakeHead(Head kind, int m, std::mt19937& rng, int sink_token, int b1, int b2) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  MatrixF a(m, m);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) {
      float s = normal(rng);
      switch (kind) {
        case Head::kRandom: break;
        case Head::kClsSink: s += j == 0 ? 6.0f : 0.0f; break;
        case Head::kTokenSink: s += j == sink_token ? 6.0f : (j == 0 ? 3.0f : 0.0f); break;
        case Head::kSelf: s += j == i ? 6.0f : 0.0f; break;
        case Head::kLocal: s += 3.0f - 1.5f * static_cast<float>((i - j) * (i - j)); break;
        case Head::kBottleneck: s += j == b1 ? 12.0f : (j == b2 ? 11.0f : 0.0f); break;
        case Head::kPeaked: s *= 4.0f; break;
      }
      a(i, j) = s;
    }
    const float mx = a.row(i).maxCoeff();
    for (int j = 0; j < m; ++j) a(i, j) = std::exp(a(i, j) - mx);
  }
  NormalizeRows(a);
  return a;
}

// Keeps the k largest entries of every row (exact zeros elsewhere), renormalised.
MatrixF TopK(const MatrixF& a, int k) {
  MatrixF out = MatrixF::Zero(a.rows(), a.cols());
  std::vector<int> idx(a.cols());
  for (int i = 0; i < a.rows(); ++i) {
    for (int j = 0; j < a.cols(); ++j) idx[j] = j;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int x, int y) { return a(i, x) > a(i, y); });
    for (int t = 0; t < k; ++t) out(i, idx[t]) = a(i, idx[t]);
  }
  NormalizeRows(out);
  return out;
}

struct Recipe {
  const char* name;
  float residual;  // 0: no residual
  int top_k;       // 0: no pruning
};

// L layers of fused (mean of H heads), residual-corrected attention with the
// structures real models show; the middle layer(s) are bottlenecks.
std::vector<MatrixF> Structured(int L, int m, uint32_t seed, const Recipe& recipe) {
  std::mt19937 rng(seed);
  const int sink_token = m / 2;
  std::vector<MatrixF> layers;
  for (int l = 0; l < L; ++l) {
    const bool bottleneck = L >= 3 && (l == L / 2 || (L >= 6 && l == L / 2 - 1));
    std::vector<Head> heads;
    if (bottleneck) {
      heads = {Head::kBottleneck, Head::kBottleneck, Head::kBottleneck};
    } else {
      static const Head kMix[] = {Head::kRandom, Head::kClsSink, Head::kTokenSink,
                                  Head::kSelf,   Head::kLocal,   Head::kPeaked};
      for (int h = 0; h < 3; ++h) heads.push_back(kMix[(l * 3 + h + seed) % 6]);
    }
    std::uniform_int_distribution<int> tok(0, m - 1);
    const int b1 = tok(rng), b2 = tok(rng);
    MatrixF fused = MatrixF::Zero(m, m);
    for (Head h : heads) fused += MakeHead(h, m, rng, sink_token, b1, b2);
    fused /= static_cast<float>(heads.size());
    if (recipe.top_k > 0 && recipe.top_k < m) fused = TopK(fused, recipe.top_k);
    layers.push_back(recipe.residual > 0 ? Residual(fused, recipe.residual) : fused);
  }
  return layers;
}

std::vector<MatrixF> IidResidual(int L, int m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<MatrixF> layers;
  for (int l = 0; l < L; ++l)
    layers.push_back(Residual(MakeHead(Head::kRandom, m, rng, 0, 0, 0), 0.5f));
  return layers;
}

// ---- independent references ---------------------------------------------------

using testutil::LemonFlow;

// |got - want| <= 1e-6 |want| + 1e-12.
::testing::AssertionResult Agrees(double got, double want) {
  if (std::abs(got - want) <= 1e-6 * std::abs(want) + 1e-12) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << ", want " << want << " (diff "
                                       << got - want << ")";
}

// ---- hand-derived and closed forms --------------------------------------------

TEST(AttentionFlowTest, TwoLayersTwoTokensByHand) {
  // Two layers: every path (0, j) -> (1, k) -> (2, i) has its own middle node,
  // so flow(i, j) = sum_k min(At_1[k, j], At_2[i, k]).
  //   flow(0,0) = min(.7,.9) + min(.4,.1) = .8    flow(0,1) = min(.3,.9) + min(.6,.1) = .4
  //   flow(1,0) = min(.7,.2) + min(.4,.8) = .6    flow(1,1) = min(.3,.2) + min(.6,.8) = .8
  const std::vector<MatrixF> layers = {Mat({{0.7f, 0.3f}, {0.4f, 0.6f}}),
                                       Mat({{0.9f, 0.1f}, {0.2f, 0.8f}})};
  AttentionFlow flow(layers);
  EXPECT_EQ(flow.size(), 2);
  EXPECT_NEAR(flow.MaxFlow(0, 0), 0.8, 1e-7);
  EXPECT_NEAR(flow.MaxFlow(1, 0), 0.4, 1e-7);
  EXPECT_NEAR(flow.MaxFlow(0, 1), 0.6, 1e-7);
  EXPECT_NEAR(flow.MaxFlow(1, 1), 0.8, 1e-7);
}

TEST(AttentionFlowTest, TwoLayersClosedFormOnStructuredAttention) {
  for (uint32_t seed = 0; seed < 4; ++seed) {
    const int m = 7 + 5 * static_cast<int>(seed);
    const std::vector<MatrixF> layers = Structured(2, m, seed, {"mixed", 0.5f, 0});
    AttentionFlow flow(layers);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < m; ++j) {
        double want = 0;
        for (int k = 0; k < m; ++k)
          want += std::min<double>(layers[0](k, j), layers[1](i, k));
        EXPECT_TRUE(Agrees(flow.MaxFlow(j, i), want)) << "seed " << seed << " i " << i << " j " << j;
      }
    }
  }
}

TEST(AttentionFlowTest, SingleLayerIsTheAttention) {
  std::mt19937 rng(7);
  const std::vector<MatrixF> layers = {Residual(MakeHead(Head::kPeaked, 9, rng, 0, 0, 0), 0.5f)};
  AttentionFlow flow(layers);
  for (int i = 0; i < 9; ++i)
    for (int j = 0; j < 9; ++j) EXPECT_TRUE(Agrees(flow.MaxFlow(j, i), layers[0](i, j)));
}

TEST(AttentionFlowTest, IdentityLayersPassOnlyTheToken) {
  const std::vector<MatrixF> layers(5, MatrixF::Identity(6, 6));
  AttentionFlow flow(layers);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(flow.MaxFlow(j, i), i == j ? 1.0 : 0.0);
}

TEST(AttentionFlowTest, IidAttentionReachesTheBound) {
  // With i.i.d. softmax attention every flow is min(colsum At_1[:, j], rowsum
  // At_L[i, :] = 1): the closed form the structured cases must not reduce to.
  // (It needs a few layers to mix: with L <= 3 the paths are too few, e.g.
  // L = 2 gives sum_k min(At_1[k, j], At_2[i, k]) above, well below it.)
  for (auto [L, m] : {std::pair{4, 50}, {6, 30}, {12, 40}}) {
    const std::vector<MatrixF> layers = IidResidual(L, m, 11);
    AttentionFlow flow(layers);
    for (int i = 0; i < m; i += 3) {
      for (int j = 0; j < m; ++j) {
        const double colsum = layers[0].col(j).cast<double>().sum();
        const double rowsum = layers.back().row(i).cast<double>().sum();
        const double got = flow.MaxFlow(j, i);
        EXPECT_NEAR(got, std::min(colsum, rowsum), 1e-9) << "L " << L << " i " << i << " j " << j;
        EXPECT_TRUE(flow.last_stats().hit_bound);
        EXPECT_DOUBLE_EQ(flow.Bound(j, i), std::min(colsum, rowsum));
      }
    }
  }
}

// ---- LEMON on structured attention --------------------------------------------

struct Totals {
  int pairs = 0;
  int below_bound = 0;
  int split = 0;  // certified by the split (AttentionFlow::TrySplit)
};

void CompareWithLemon(const std::vector<MatrixF>& layers, int max_pairs, uint32_t seed,
                      const std::string& what, Totals* totals) {
  const int m = static_cast<int>(layers[0].rows());
  AttentionFlow flow(layers);
  LemonFlow lemon(layers);
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) pairs.push_back({i, j});
  if (static_cast<int>(pairs.size()) > max_pairs) {
    std::mt19937 rng(seed);
    std::shuffle(pairs.begin(), pairs.end(), rng);
    pairs.resize(max_pairs);
    pairs.push_back({0, 0});  // the CLS row is always in
    pairs.push_back({0, m - 1});
  }
  for (auto [i, j] : pairs) {
    const double want = lemon(j, i);
    const double got = flow.MaxFlow(j, i);
    EXPECT_TRUE(Agrees(got, want)) << what << " output " << i << " input " << j;
    EXPECT_LE(got, flow.Bound(j, i) * (1 + 1e-12));
    ++totals->pairs;
    totals->below_bound += want < flow.Bound(j, i) * (1 - 1e-6);
    totals->split += flow.last_stats().split;
  }
}

TEST(AttentionFlowTest, SplitCertificateAgreesWithLemonAndWithFreshObjects) {
  // One object over all pairs: from a source's second pair on, its pairs are
  // first tried with the split certificate (a flow of the lower layers fixed
  // per source, glued to a search of the upper layers). Deep residual stacks
  // (every pair at its bound, most certified), unnormalised and pruned rows
  // (some certificates fail and the pair is solved in full), and shallow
  // stacks whose split layer is low.
  const Recipe recipes[] = {{"residual", 0.5f, 0}, {"pruned_top3", 0.5f, 3},
                            {"light_residual", 0.2f, 4}};
  const std::pair<int, int> shapes[] = {{12, 30}, {8, 24}, {5, 17}, {4, 9}};
  Totals totals;
  uint32_t seed = 900;
  for (const Recipe& r : recipes) {
    for (auto [L, m] : shapes) {
      ++seed;
      std::vector<MatrixF> layers = Structured(L, m, seed, r);
      if (seed % 2 == 0) layers[L / 2] *= 1.7f;  // rows summing to 1.7: other bounds
      const std::string what = std::string(r.name) + " L=" + std::to_string(L) +
                               " m=" + std::to_string(m) + " seed=" + std::to_string(seed);
      CompareWithLemon(layers, m * m, seed, what, &totals);
      // A fresh object per pair never uses the split (each source once).
      AttentionFlow flow(layers);
      for (int i = 0; i < m; i += 3) {
        for (int j = 0; j < m; ++j) {
          AttentionFlow fresh(layers);
          const double want = fresh.MaxFlow(j, i);
          EXPECT_FALSE(fresh.last_stats().split);
          // The same acceptance as a full solve: the values agree to rounding.
          EXPECT_NEAR(flow.MaxFlow(j, i), want, std::max(1e-13, 1e-11 * want))
              << what << " output " << i << " input " << j;
        }
      }
    }
  }
  RecordProperty("pairs", totals.pairs);
  RecordProperty("split", totals.split);
  EXPECT_GT(totals.split, totals.pairs / 8) << totals.split << " of " << totals.pairs;
  EXPECT_LT(totals.split, totals.pairs);
}

TEST(AttentionFlowTest, AgreesWithLemonOnStructuredAttention) {
  const Recipe recipes[] = {{"residual", 0.5f, 0}, {"pruned_top3", 0.5f, 3},
                            {"no_residual", 0.0f, 0}, {"light_residual", 0.2f, 4}};
  const std::pair<int, int> shapes[] = {{1, 5}, {2, 8}, {3, 5}, {3, 13}, {4, 21},
                                        {5, 34}, {6, 16}, {8, 60}, {8, 9}};
  Totals totals;
  uint32_t seed = 0;
  for (const Recipe& r : recipes) {
    for (auto [L, m] : shapes) {
      ++seed;
      const std::string what = std::string(r.name) + " L=" + std::to_string(L) +
                               " m=" + std::to_string(m) + " seed=" + std::to_string(seed);
      CompareWithLemon(Structured(L, m, seed, r), m <= 13 ? m * m : 60, seed, what, &totals);
    }
  }
  // The structure must matter: a good share of pairs end below their bound
  // (these need the cut proof, unlike i.i.d. attention).
  RecordProperty("pairs", totals.pairs);
  RecordProperty("below_bound", totals.below_bound);
  EXPECT_GT(totals.below_bound, totals.pairs / 4)
      << totals.below_bound << " of " << totals.pairs << " pairs below the bound";
}

TEST(AttentionFlowTest, AgreesWithLemonOnSinkDominatedDeepStacks) {
  // Near-identity (self-head) layers on top of sink and bottleneck layers: the
  // min cut sits high in the graph and the solver needs several BFS phases.
  std::mt19937 rng(99);
  Totals totals;
  for (int rep = 0; rep < 3; ++rep) {
    const int m = 24 + 8 * rep, L = 8;
    std::vector<MatrixF> layers;
    for (int l = 0; l < L; ++l) {
      Head kind = l < 2 ? Head::kLocal : (l < 4 ? Head::kTokenSink : (l == 4 ? Head::kBottleneck : Head::kSelf));
      MatrixF a = (MakeHead(kind, m, rng, m / 3, 1, 2) + MakeHead(Head::kClsSink, m, rng, 0, 0, 0) +
                   MakeHead(kind, m, rng, m / 3, 1, 2)) / 3.0f;
      layers.push_back(Residual(a, 0.5f));
    }
    CompareWithLemon(layers, 80, 1000 + rep, "deep m=" + std::to_string(m), &totals);
  }
  EXPECT_GT(totals.below_bound, 0);
}

TEST(AttentionFlowTest, AgreesWithLemonOnManySmallRandomGraphs) {
  // Small graphs of every kind (sparse rows, zero rows, rows not summing to
  // 1, one dominant token per layer), all pairs: many different cut shapes.
  std::mt19937 rng(2024);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  Totals totals;
  for (int rep = 0; rep < 150; ++rep) {
    const int m = 2 + rep % 9, L = 1 + (rep / 9) % 7;
    std::vector<MatrixF> layers;
    for (int l = 0; l < L; ++l) {
      MatrixF a(m, m);
      const float density = 0.2f + 0.8f * uni(rng);
      const int hub = static_cast<int>(uni(rng) * m) % m;
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < m; ++j) {
          float x = uni(rng) < density ? uni(rng) * uni(rng) : 0.0f;
          if (j == hub && rep % 3 == 0) x += 2.0f;
          a(i, j) = x;
        }
      }
      if (rep % 4 != 3) NormalizeRows(a);  // else: unnormalised (and maybe zero) rows
      if (rep % 5 == 1) a = Residual(a, 0.5f);
      layers.push_back(a);
    }
    CompareWithLemon(layers, m * m, rep, "random rep=" + std::to_string(rep), &totals);
  }
  EXPECT_GT(totals.below_bound, totals.pairs / 4);
}

TEST(AttentionFlowTest, TinyCapacitiesStayWithinTolerance) {
  // Capacities are never rounded: floats widen exactly to double. Arcs at or
  // below 1e-15 are treated as absent; flows carried only by such arcs (and
  // arcs far below float's normal range) must still agree with LEMON.
  const int m = 6, L = 3;
  std::mt19937 rng(5);
  std::vector<MatrixF> layers;
  for (int l = 0; l < L; ++l) {
    MatrixF a = Residual(MakeHead(Head::kSelf, m, rng, 0, 0, 0), 0.5f);
    for (int i = 0; i < m; ++i) a(i, (i + 1) % m) = (l == 1) ? 1e-30f : 1e-12f;
    a(2, 4) = 1e-17f;
    a(3, 1) = 1e-40f;  // denormal
    layers.push_back(a);
  }
  Totals totals;
  CompareWithLemon(layers, m * m, 5, "tiny", &totals);
}

TEST(AttentionFlowTest, UnnormalisedRowsUseTheirActualSums) {
  // Renormalisation can be switched off: rows then need not sum to 1, and the
  // bound is min(column sum of At_1, row sum of At_L) as computed.
  std::mt19937 rng(3);
  std::vector<MatrixF> layers;
  for (int l = 0; l < 4; ++l) {
    MatrixF a = MakeHead(l == 2 ? Head::kBottleneck : Head::kLocal, 10, rng, 0, 3, 4);
    a *= 0.5f + 0.25f * static_cast<float>(l);
    a += 0.3f * MatrixF::Identity(10, 10);
    layers.push_back(a);
  }
  Totals totals;
  CompareWithLemon(layers, 100, 3, "unnormalised", &totals);
}

// ---- random layered graphs of several shapes, degenerate graphs ----------------

// Random layered graphs: every capacity drawn from `kind`, rows renormalised
// unless `normalise` is false.
enum class Caps { kDense, kSparse, kTies, kZeroLayer };
std::vector<MatrixF> RandomLayers(int L, int m, uint32_t seed, Caps kind, bool normalise) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<MatrixF> layers;
  for (int l = 0; l < L; ++l) {
    MatrixF a(m, m);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < m; ++j) {
        float x = uni(rng);
        switch (kind) {
          case Caps::kDense: x = x * x * x; break;
          case Caps::kSparse: x = x < 0.9f ? 0.0f : uni(rng); break;  // ~10% of arcs
          case Caps::kTies: x = std::floor(x * 4.0f) / 8.0f; break;   // 0, 1/8, 1/4, 3/8
          case Caps::kZeroLayer: x = l == L / 2 ? 0.0f : x; break;
        }
        a(i, j) = x + (i == j && kind != Caps::kZeroLayer ? 0.25f : 0.0f);
      }
    }
    if (normalise) NormalizeRows(a);
    layers.push_back(a);
  }
  return layers;
}

TEST(AttentionFlowTest, AgreesWithLemonOnRandomLayeredGraphs) {
  // Dense and sparse random rows (normalised or not) and structured attention,
  // token counts on both sides of multiples of the solver's 8-arc row scans,
  // 2 to 7 layers. Dense x^3 rows hold arcs far below the bound's tolerance.
  Totals totals;
  uint32_t seed = 500;
  for (int m : {63, 64, 65, 127, 129}) {
    for (int L : {2, 3, 7}) {
      ++seed;
      const Caps kind = seed % 3 == 0 ? Caps::kSparse : Caps::kDense;
      const std::string what = "m=" + std::to_string(m) + " L=" + std::to_string(L) +
                               " seed=" + std::to_string(seed);
      CompareWithLemon(RandomLayers(L, m, seed, kind, seed % 2 == 0), 40, seed, what, &totals);
      CompareWithLemon(Structured(L, m, seed, {"residual", 0.5f, 0}), 40, seed, "structured " + what,
                       &totals);
    }
  }
  EXPECT_GT(totals.below_bound, totals.pairs / 10)
      << totals.below_bound << " of " << totals.pairs << " pairs below the bound";
}

TEST(AttentionFlowTest, AgreesWithLemonOnTiesAndSparseArcs) {
  // Capacities from {0, 1/8, 1/4, 3/8} (+1/4 on the diagonal): many equal
  // paths and many minimum cuts of the same value; and ~90% exact zeros.
  Totals totals;
  for (int rep = 0; rep < 12; ++rep) {
    const int m = 5 + 11 * rep, L = 1 + rep % 6;
    const Caps kind = rep % 2 == 0 ? Caps::kTies : Caps::kSparse;
    CompareWithLemon(RandomLayers(L, m, 700 + rep, kind, rep % 4 < 2), m <= 12 ? m * m : 50, rep,
                     "rep=" + std::to_string(rep), &totals);
  }
  EXPECT_GT(totals.below_bound, 0);
}

TEST(AttentionFlowTest, ArcsBelowTheBoundToleranceStillCarryFlow) {
  // An arc whose capacity (5e-13) is above the 1e-15 floor but below the
  // bound's tolerance (1e-12 x bound): it must carry its flow, and the search
  // must not offer it again and again (two layers: the closed form).
  const std::vector<MatrixF> layers = {Mat({{0.5f, 0.5f}, {0.5f, 0.5f}}),
                                       Mat({{1.0f, 5e-13f}, {0.5f, 0.5f}})};
  AttentionFlow flow(layers);
  const double want = 0.5 + static_cast<double>(5e-13f);
  EXPECT_NEAR(flow.MaxFlow(0, 0), want, 1e-15);
  LemonFlow lemon(layers);
  EXPECT_NEAR(lemon(0, 0), want, 1e-15);
}

TEST(AttentionFlowTest, ZeroLayerCutsEveryFlow) {
  // A layer of zeros in the middle: every flow is exactly 0 (the bound is not).
  for (int m : {3, 64, 70}) {
    const std::vector<MatrixF> layers = RandomLayers(5, m, 31, Caps::kZeroLayer, false);
    AttentionFlow flow(layers);
    LemonFlow lemon(layers);
    for (int i = 0; i < m; i += 7) {
      for (int j = 0; j < m; j += 5) {
        EXPECT_GT(flow.Bound(j, i), 0.0);
        EXPECT_EQ(flow.MaxFlow(j, i), 0.0) << "m " << m << " i " << i << " j " << j;
        EXPECT_EQ(lemon(j, i), 0.0);
      }
    }
  }
}

TEST(AttentionFlowTest, ZeroRowsAndColumnsGiveZeroFlows) {
  // Token 2 attends to nothing in the last layer (a zero row: bound 0) and
  // nobody attends to token 1 in the first (a zero column: bound 0); token 3
  // is cut off in the middle layer (zero row and column there).
  const int m = 66, L = 3;
  std::vector<MatrixF> layers = RandomLayers(L, m, 41, Caps::kDense, true);
  layers[2].row(2).setZero();
  layers[0].col(1).setZero();
  layers[1].row(3).setZero();
  layers[1].col(3).setZero();
  AttentionFlow flow(layers);
  LemonFlow lemon(layers);
  for (int j = 0; j < m; ++j) EXPECT_EQ(flow.MaxFlow(j, 2), 0.0);
  for (int i = 0; i < m; ++i) EXPECT_EQ(flow.MaxFlow(1, i), 0.0);
  for (int i = 0; i < m; i += 5)
    for (int j = 0; j < m; j += 3) EXPECT_TRUE(Agrees(flow.MaxFlow(j, i), lemon(j, i))) << i << " " << j;
}

TEST(AttentionFlowTest, OneLayerOfManyTokensIsTheAttention) {
  // L = 1: the only path is the arc itself (exact, no tolerance), across words.
  const std::vector<MatrixF> layers = RandomLayers(1, 130, 43, Caps::kSparse, true);
  AttentionFlow flow(layers);
  for (int i = 0; i < 130; i += 3)
    for (int j = 0; j < 130; ++j)
      EXPECT_EQ(flow.MaxFlow(j, i), static_cast<double>(layers[0](i, j)) > 1e-15
                                        ? static_cast<double>(layers[0](i, j))
                                        : 0.0);
}

TEST(AttentionFlowTest, UniformAttentionIsOneOverM) {
  // Every row 1/m (all arcs tie): the source's arcs carry colsum = 1 and the
  // sink's rowsum = 1, and the graph is complete, so every flow is 1.
  for (int m : {64, 65}) {
    const std::vector<MatrixF> layers(4, MatrixF::Constant(m, m, 1.0f / static_cast<float>(m)));
    AttentionFlow flow(layers);
    for (int i = 0; i < m; i += 9)
      for (int j = 0; j < m; j += 4) EXPECT_NEAR(flow.MaxFlow(j, i), flow.Bound(j, i), 1e-12);
    EXPECT_NEAR(flow.Bound(0, 0), 1.0, 1e-6);
  }
}

// ---- the object's contract ------------------------------------------------------

TEST(AttentionFlowTest, FlowRowMatchesMaxFlowAndScratchIsReset) {
  const std::vector<MatrixF> layers = Structured(6, 25, 42, {"residual", 0.5f, 0});
  AttentionFlow flow(layers);
  std::vector<double> first(25);
  for (int j = 0; j < 25; ++j) first[j] = flow.MaxFlow(j, 3);
  // Many other pairs in between, then the same row again: bit-identical.
  for (int i = 0; i < 25; i += 4)
    for (int j = 0; j < 25; ++j) flow.MaxFlow(j, i);
  std::vector<double> row(25);
  ASSERT_TRUE(flow.FlowRow(3, row.data()));
  EXPECT_EQ(row, first);
  AttentionFlow fresh(layers);
  for (int j = 0; j < 25; ++j) EXPECT_EQ(fresh.MaxFlow(j, 3), first[j]);
}

TEST(AttentionFlowTest, FlowRowStopsWhenCancelled) {
  const std::vector<MatrixF> layers = Structured(4, 20, 8, {"residual", 0.5f, 0});
  AttentionFlow flow(layers);
  std::vector<double> row(20, -1.0);
  int polls = 0;
  EXPECT_FALSE(flow.FlowRow(0, row.data(), [&] { return ++polls > 5; }));
  EXPECT_EQ(polls, 6);
  EXPECT_GE(row[4], 0.0);
  EXPECT_EQ(row[5], -1.0);
  EXPECT_TRUE(flow.FlowRow(0, row.data(), [] { return false; }));
  EXPECT_GE(*std::min_element(row.begin(), row.end()), 0.0);
}

TEST(AttentionFlowTest, ObjectsOverSharedLayersRunInParallel) {
  const std::vector<MatrixF> layers = Structured(6, 40, 77, {"residual", 0.5f, 0});
  std::vector<std::vector<double>> serial(4, std::vector<double>(40));
  {
    AttentionFlow flow(layers);
    for (int t = 0; t < 4; ++t) flow.FlowRow(t, serial[t].data());
  }
  std::vector<std::vector<double>> parallel(4, std::vector<double>(40));
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      AttentionFlow flow(layers);  // per-thread scratch, shared const input
      for (int t = w; t < 4; t += 2) flow.FlowRow(t, parallel[t].data());
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(parallel, serial);
}

TEST(AttentionFlowTest, CostEstimateGrowsLikeRowsTimesMCubed) {
  const double one = EstimateFlowCost(12, 197, 1);
  EXPECT_GT(one, 0);
  EXPECT_DOUBLE_EQ(EstimateFlowCost(12, 197, 197), 197 * one);
  EXPECT_NEAR(EstimateFlowCost(12, 394, 1) / one, 8.0, 1e-9);
  EXPECT_NEAR(EstimateFlowCost(24, 197, 1) / one, 2.0, 1e-9);
  const int64_t one_sink = AttentionFlow::WorkingBytes(12, 197, false);
  EXPECT_GT(one_sink, 12 * 197 * 197 * 8);
  // Several sinks: the split's two solvers (9 and 5 layers of flows) and the
  // copies of the 12 layers plus two (floats) on top.
  EXPECT_GT(AttentionFlow::WorkingBytes(12, 197, true) - one_sink,
            (9 + 5) * 197 * 197 * 8 + 14 * 197 * 197 * 4);
}

// ---- networkx, the reference's own library ------------------------------------

using ::attnroll::testing::RunCommand;

TEST(AttentionFlowTest, AgreesWithNetworkx) {
  int status = 0;
  RunCommand("/usr/bin/python3 -c 'import networkx' 2>&1", &status);
  ASSERT_EQ(status, 0) << "/usr/bin/python3 cannot import networkx: install python3-networkx "
                          "(deploy/install-deps.sh)";
  const std::string script =
      std::string(ATTNROLL_SOURCE_DIR) + "/tests/analysis/networkx_flow_reference.py";
  struct Case {
    int L, m;
    uint32_t seed;
    Recipe recipe;
    const char* flow_func;
  };
  const Case cases[] = {{2, 4, 1, {"residual", 0.5f, 0}, "edmonds_karp"},
                        {3, 6, 2, {"residual", 0.5f, 0}, "preflow_push"},
                        {4, 7, 3, {"pruned_top3", 0.5f, 3}, "preflow_push"},
                        {5, 8, 4, {"no_residual", 0.0f, 0}, "preflow_push"}};
  char dir_template[] = "/tmp/attention_flow_test.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  ASSERT_NE(dir, nullptr);
  int below = 0;
  for (const Case& c : cases) {
    const std::vector<MatrixF> layers = Structured(c.L, c.m, c.seed, c.recipe);
    const std::string path = std::string(dir) + "/layers_" + std::to_string(c.seed) + ".txt";
    {
      std::ofstream f(path);
      f.precision(9);  // float round-trips with 9 significant digits
      f << c.L << " " << c.m << "\n";
      for (const MatrixF& a : layers)
        for (int i = 0; i < c.m; ++i)
          for (int j = 0; j < c.m; ++j) f << a(i, j) << (j + 1 < c.m ? " " : "\n");
    }
    const std::string out = RunCommand("/usr/bin/python3 " + script + " " + path +
                                           " --flow-func " + c.flow_func + " 2>&1",
                                       &status);
    std::remove(path.c_str());
    ASSERT_EQ(status, 0) << out;
    std::istringstream in(out);
    AttentionFlow flow(layers);
    for (int i = 0; i < c.m; ++i) {
      for (int j = 0; j < c.m; ++j) {
        double want = -1;
        ASSERT_TRUE(static_cast<bool>(in >> want)) << "short output:\n" << out;
        EXPECT_TRUE(Agrees(flow.MaxFlow(j, i), want))
            << c.recipe.name << " L=" << c.L << " m=" << c.m << " output " << i << " input " << j;
        below += want < flow.Bound(j, i) * (1 - 1e-6);
      }
    }
  }
  rmdir(dir);
  EXPECT_GT(below, 0);
}

}  // namespace
}  // namespace attnroll::analysis
