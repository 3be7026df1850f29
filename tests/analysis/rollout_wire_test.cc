// The wire path of SequenceRollout (heads fused straight from the received
// rows in groups, rows finished strip by strip, only what the read-out needs
// kept) against the whole-matrix path (AddHead), and its row read-out
// (the wanted rows of the last layer pushed back through the kept layers)
// against the full chain, for every fusion, causal layouts (only the lower
// triangle computed), residual weights and every read-out, with both builds
// of the kernels.
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/analysis/buffers.h"
#include "server/analysis/fuse_kernels.h"
#include "server/analysis/rollout.h"
#include "tests/testutil/attention_testutil.h"

namespace attnroll::analysis {
namespace {

using ::testing::FloatNear;
using ::testing::Pointwise;
using testing::RandomStochastic;
using testing::View;

struct Case {
  std::vector<std::vector<MatrixF>> layers;  // [l][h], m x m
  std::vector<std::vector<float>> residual_weights;  // [l] (m each) or empty
};

// Causal: lower-triangular rows, with a little tolerated mass above the
// diagonal that must be dropped (it is never read on the wire path).
Case MakeCase(int L, int H, int m, bool causal, bool weights, std::mt19937& rng) {
  Case c;
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int l = 0; l < L; ++l) {
    std::vector<MatrixF>& heads = c.layers.emplace_back();
    for (int h = 0; h < H; ++h) {
      MatrixF a = RandomStochastic(m, rng, 3.0f);
      if (causal) {
        for (int i = 0; i < m; ++i) {
          for (int j = i + 1; j < m; ++j) a(i, j) = (i + j) % 5 == 0 ? 2e-4f : 0.0f;
          a.row(i).head(i + 1) /= a.row(i).head(i + 1).sum();
        }
      }
      heads.push_back(a);
    }
    if (weights) {
      std::vector<float>& w = c.residual_weights.emplace_back(m);
      for (float& x : w) x = u(rng);
    }
  }
  return c;
}

const float* Weights(const Case& c, int l) {
  return c.residual_weights.empty() ? nullptr : c.residual_weights[l].data();
}

Maps Whole(const RolloutSpec& spec, const Case& c, RolloutPath path) {
  const int L = static_cast<int>(c.layers.size()), H = static_cast<int>(c.layers[0].size());
  const int m = static_cast<int>(c.layers[0][0].rows());
  SequenceRollout r(spec, L, H, m, path);
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < H; ++h) r.AddHeadRows(l, h, 0, View(c.layers[l][h]));
    r.EndLayer(l, Weights(c, l));
  }
  Maps aggregate;
  Maps maps = r.Finish(spec.fusion == Fusion::kNone ? &aggregate : nullptr);
  if (spec.fusion == Fusion::kNone) {
    maps.values.insert(maps.values.end(), aggregate.values.begin(), aggregate.values.end());
  }
  return maps;
}

// As the session feeds it: strips of `strip` rows, every head of a strip in
// one call (the fuser splits them into groups), then the strip's rows ended.
Maps Wire(const RolloutSpec& spec, const Case& c, RolloutPath path, int strip, bool split_heads) {
  const int L = static_cast<int>(c.layers.size()), H = static_cast<int>(c.layers[0].size());
  const int m = static_cast<int>(c.layers[0][0].rows());
  SequenceRollout r(spec, L, H, m, path);
  EXPECT_TRUE(r.wire_path());
  std::vector<RowStats> stats(H * strip);
  for (int l = 0; l < L; ++l) {
    // split_heads: the layer arrives as two messages (heads [0, 2) and [2, H)).
    const std::vector<std::pair<int, int>> messages =
        split_heads ? std::vector<std::pair<int, int>>{{0, 2}, {2, H}} : std::vector<std::pair<int, int>>{{0, H}};
    for (const auto& [h0, h1] : messages) {
      for (int r0 = 0; r0 < m; r0 += strip) {
        const int rows = std::min(strip, m - r0);
        std::vector<WireRows> in;
        for (int h = h0; h < h1; ++h) in.push_back({c.layers[l][h].data() + r0 * m, m});
        r.AddWireHeads(l, h0, h1 - h0, WireType::kF32, in.data(), r0, rows, stats.data(), strip);
        if (h1 == H) r.EndRows(l, r0, rows, Weights(c, l));
      }
    }
    r.EndLayer(l, Weights(c, l), /*rows_ended=*/true);
  }
  Maps aggregate;
  Maps maps = r.Finish(spec.fusion == Fusion::kNone ? &aggregate : nullptr);
  if (spec.fusion == Fusion::kNone) {
    maps.values.insert(maps.values.end(), aggregate.values.begin(), aggregate.values.end());
  }
  return maps;
}

TEST(RolloutWireTest, WirePathMatchesWholeMatricesAndRowMatchesChain) {
  std::mt19937 rng(21);
  const int L = 4, H = 6, m = 37;
  int cases = 0;
  for (bool causal : {false, true}) {
    for (bool weights : {false, true}) {
      const Case c = MakeCase(L, H, m, causal, weights, rng);
      for (Fusion f : {Fusion::kMean, Fusion::kMax, Fusion::kMin, Fusion::kWeighted, Fusion::kNone}) {
        for (int readout = 0; readout < 3; ++readout) {  // rows, mean of rows, last row
          RolloutSpec spec;
          spec.fusion = f;
          spec.causal = causal;
          if (f == Fusion::kWeighted) spec.head_weights = {0.5f, 1.0f, 2.0f, 0.25f, 1.5f, 1.0f};
          spec.first_layer = 1;
          spec.readout.rows = readout == 0 ? std::vector<int>{0, 5, 36} : std::vector<int>{};
          spec.readout.mean_of_rows = readout == 1;
          spec.readout.last_row = readout == 2;
          spec.readout.prefix = 1;
          ASSERT_TRUE(ValidateRolloutSpec(spec, L, H, m).ok());
          const std::string what = "causal " + std::to_string(causal) + " weights " +
                                   std::to_string(weights) + " fusion " +
                                   std::to_string(static_cast<int>(f)) + " readout " +
                                   std::to_string(readout);
          const Maps chain = Whole(spec, c, RolloutPath::kChain);
          const Maps row = Whole(spec, c, RolloutPath::kRow);
          EXPECT_THAT(row.values, Pointwise(FloatNear(2e-6), chain.values)) << what;
          // Both builds of the kernels (portable, and AVX2 where the CPU has it).
          const KernelIsa active = ActiveKernelIsa();
          for (KernelIsa isa : {KernelIsa::kPortable, KernelIsa::kAvx2}) {
            if (!KernelIsaAvailable(isa)) continue;
            SetActiveKernelIsa(isa);
            for (RolloutPath path : {RolloutPath::kRow, RolloutPath::kChain}) {
              for (int strip : {1, 5, 37}) {
                const Maps wire = Wire(spec, c, path, strip, strip == 5);
                EXPECT_EQ(wire.shape, chain.shape) << what;
                EXPECT_THAT(wire.values, Pointwise(FloatNear(2e-6), chain.values))
                    << what << " path " << RolloutPathName(path) << " strip " << strip << " "
                    << KernelIsaName(isa);
                ++cases;
              }
            }
          }
          SetActiveKernelIsa(active);
          // Per-layer read-outs (chain) on the wire path.
          RolloutSpec per_layer = spec;
          per_layer.per_layer = true;
          EXPECT_THAT(Wire(per_layer, c, RolloutPath::kChain, 5, false).values,
                      Pointwise(FloatNear(2e-6), Whole(per_layer, c, RolloutPath::kChain).values))
              << what << " per layer";
        }
      }
    }
  }
  const int isas = KernelIsaAvailable(KernelIsa::kAvx2) ? 2 : 1;
  EXPECT_EQ(cases, 2 * 2 * 5 * 3 * 2 * 3 * isas);
}

// Buffers come from the current source, are given back to it, and a second
// rollout of the same shape takes the same buffers again.
class CountingSource : public BufferSource {
 public:
  float* Allocate(size_t floats) override {
    ++allocated;
    for (auto it = kept.begin(); it != kept.end(); ++it) {
      if (it->second == floats) {
        float* p = it->first;
        kept.erase(it);
        ++reused;
        return p;
      }
    }
    return new float[floats];
  }
  void Release(float* data, size_t floats) override {
    ++released;
    kept.emplace_back(data, floats);
  }
  ~CountingSource() override {
    for (auto& [p, n] : kept) delete[] p;
  }
  int allocated = 0, released = 0, reused = 0;
  std::vector<std::pair<float*, size_t>> kept;
};

TEST(RolloutWireTest, BuffersComeFromTheSourceAndAreReused) {
  std::mt19937 rng(3);
  const Case c = MakeCase(5, 3, 20, false, false, rng);
  RolloutSpec spec;
  CountingSource source;
  SetBufferSource(&source);
  const Maps first = Wire(spec, c, RolloutPath::kRow, 4, false);
  const int per_pass = source.allocated;
  EXPECT_GE(per_pass, 4);  // the fused matrix of each layer but the last is kept
  EXPECT_EQ(source.released, per_pass);
  const Maps second = Wire(spec, c, RolloutPath::kRow, 4, false);
  EXPECT_EQ(source.allocated, 2 * per_pass);
  EXPECT_EQ(source.reused, per_pass);
  EXPECT_EQ(first.values, second.values);
  const Maps chain = Wire(spec, c, RolloutPath::kChain, 4, false);
  SetBufferSource(nullptr);
  EXPECT_THAT(chain.values, Pointwise(FloatNear(2e-6), first.values));
  EXPECT_EQ(source.released, source.allocated);
}

}  // namespace
}  // namespace attnroll::analysis
