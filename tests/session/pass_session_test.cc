// A pass's life without gRPC: message order, head ranges, and padding cropped
// before the math. (The header's checks are pass_plan_test.cc's.)
#include "server/session/pass_session.h"
#include "server/runtime/worker_pool.h"
#include "server/session/pass_buffers.h"

#include <cstring>
#include <random>

#include <Eigen/Core>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/attention_testutil.h"
#include "tests/testutil/pass_testutil.h"

namespace attnroll::session {
namespace {

using ::testing::HasSubstr;
using ::testing::Pointwise;
using ::testing::FloatNear;

std::unique_ptr<PassSession> Open(const v1::PassHeader& h) {
  absl::StatusOr<PassPlan> plan = PlanPass(h, runtime::PassLimits());
  EXPECT_TRUE(plan.ok()) << plan.status();
  return std::make_unique<PassSession>(*std::move(plan));
}

TEST(PassSessionTest, OrderingErrors) {
  auto a = testing::UniformAttention(1, 3, 4, 5);
  auto session = Open(testing::RolloutHeader(a));
  auto chunks0 = testing::ChunksOf(a, 0, 2);  // 2 heads per message
  auto chunks1 = testing::ChunksOf(a, 1, 2);
  auto chunks2 = testing::ChunksOf(a, 2, 4);
  ASSERT_EQ(chunks0.size(), 2u);
  auto msg = [&](const v1::LayerChunk& c) { return std::string(session->AddChunk(c).message()); };
  EXPECT_THAT(msg(chunks1[0]), HasSubstr("layer: out of order: expected layer 0, got 1"));
  EXPECT_THAT(msg(chunks0[1]), HasSubstr("head_start: gap: expected head_start 0 for layer 0, got 2"));
  ASSERT_TRUE(session->AddChunk(chunks0[0]).ok());
  EXPECT_THAT(msg(chunks0[0]), HasSubstr("head_start: overlap: layer 0 heads 0..1 were already received"));
  EXPECT_THAT(msg(chunks1[0]), HasSubstr("layer 0 is incomplete (heads 2..3 missing), got layer 1"));
  v1::LayerChunk too_many = chunks2[0];  // 4 heads where only 2 remain
  too_many.set_layer(0);
  too_many.set_head_start(2);
  EXPECT_THAT(msg(too_many), HasSubstr("shape: expected [1, h, 5, 5] with 1 <= h <= 2"));
  ASSERT_TRUE(session->AddChunk(chunks0[1]).ok());
  EXPECT_THAT(msg(chunks0[0]), HasSubstr("layer: duplicate: layer 0 was already received"));
  ASSERT_TRUE(session->AddChunk(chunks1[0]).ok());
  ASSERT_TRUE(session->AddChunk(chunks1[1]).ok());
  absl::Status early = session->Finish().status();
  EXPECT_THAT(std::string(early.message()), HasSubstr("the stream ended after 2 complete layers; expected 3 layers"));
  ASSERT_TRUE(session->AddChunk(chunks2[0]).ok());
  v1::LayerChunk extra = chunks2[0];
  EXPECT_THAT(msg(extra), HasSubstr("all 3 layers were already received"));
  EXPECT_TRUE(session->Finish().ok());
}

TEST(PassSessionTest, PaddingIsCroppedBeforeTheMath) {
  // Sequence 1 of the batch is sequence 0 padded from 6 to 9 tokens with junk;
  // both must give the same map.
  std::mt19937 rng(11);
  const int L = 3, H = 2, n = 9, m = 6;
  std::vector<analysis::MatrixF> blocks;
  for (int i = 0; i < L * H; ++i) blocks.push_back(testing::RandomStochastic(m, rng));
  auto a = testing::MakeAttention(2, L, H, n, [&](int64_t b, int64_t l, int64_t h) {
    analysis::MatrixF full = testing::RandomStochastic(n, rng);  // junk in padded rows
    full.topLeftCorner(m, n).setZero();
    full.topLeftCorner(m, m) = blocks[l * H + h];
    if (b == 0) full = testing::RandomStochastic(n, rng);  // sequence 0: unrelated full length
    return full;
  });
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_layout()->add_valid_lengths(n);
  h.mutable_layout()->add_valid_lengths(m);
  h.mutable_layout()->set_prefix_tokens(1);
  h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(2);
  auto session = Open(h);
  for (int l = 0; l < L; ++l) {
    for (auto& c : testing::ChunksOf(a, l)) {
      ASSERT_TRUE(session->AddChunk(c).ok());
    }
  }
  v1::ExplainResponse padded = *session->Finish();
  ASSERT_EQ(padded.results(0).maps_size(), 2);
  EXPECT_THAT(padded.results(0).maps(1).shape(), ::testing::ElementsAre(1, m - 1));

  auto alone = testing::MakeAttention(1, L, H, m, [&](int64_t, int64_t l, int64_t hh) {
    return blocks[l * H + hh];
  });
  v1::PassHeader h2 = testing::RolloutHeader(alone);
  h2.mutable_layout()->set_prefix_tokens(1);
  h2.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(2);
  auto s2 = Open(h2);
  for (int l = 0; l < L; ++l) {
    for (auto& c : testing::ChunksOf(alone, l)) {
      ASSERT_TRUE(s2->AddChunk(c).ok());
    }
  }
  v1::ExplainResponse cropped = *s2->Finish();
  EXPECT_THAT(testing::MapValues(padded.results(0).maps(1)),
              Pointwise(FloatNear(1e-6), testing::MapValues(cropped.results(0).maps(0))));
}

// A validate-only analysis decodes and checks every layer and computes
// nothing: a bad value is still refused, and the result has no maps.
TEST(PassSessionTest, ValidateOnlyChecksEveryLayerAndReturnsNoMaps) {
  auto a = testing::UniformAttention(2, 3, 2, 6);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.clear_analyses();
  h.add_analyses()->mutable_validate();
  auto session = Open(h);
  for (int l = 0; l < 3; ++l) ASSERT_TRUE(session->AddChunk(testing::ChunksOf(a, l)[0]).ok());
  absl::StatusOr<v1::ExplainResponse> r = session->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  EXPECT_EQ(r->results(0).path(), "validate");
  EXPECT_EQ(r->results(0).maps_size(), 0);
  auto bad = Open(h);
  v1::LayerChunk c = testing::ChunksOf(a, 0)[0];
  reinterpret_cast<float*>(c.mutable_attention()->mutable_data()->data())[40] = -1.0f;
  EXPECT_THAT(std::string(bad->AddChunk(c).message()),
              HasSubstr("attention (layer 0, head 1, sequence 0, row 0): expected probabilities >= 0"));
}

// Gradient-weighted rollout with the gradient of layer 1 all zero, as a model
// whose classifier head is initialised to zero gives it: the map is still
// returned, with a warning naming the layer; fail_on_degenerate makes it an
// error.
TEST(PassSessionTest, AnAllZeroGradientIsReportedNotSilent) {
  auto a = testing::UniformAttention(1, 3, 2, 4);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_analyses(0)->mutable_rollout()->mutable_gradient();
  auto run = [&](const v1::PassHeader& header) {
    auto session = Open(header);
    for (int l = 0; l < 3; ++l) {
      v1::LayerChunk c = testing::ChunksOf(a, l)[0];
      *c.mutable_gradient() = c.attention();
      std::string& g = *c.mutable_gradient()->mutable_data();
      if (l == 1) std::fill(g.begin(), g.end(), '\0');
      EXPECT_TRUE(session->AddChunk(c).ok());
    }
    return session->Finish();
  };
  absl::StatusOr<v1::ExplainResponse> r = run(h);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->results(0).warnings(),
              ::testing::ElementsAre(HasSubstr("sequence 0: the gradient is zero everywhere in layer 1,")));
  h.mutable_analyses(0)->mutable_rollout()->set_fail_on_degenerate(true);
  r = run(h);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("analyses[0] (fail_on_degenerate): sequence 0: the gradient is zero everywhere in layer 1"));
}


// The wire path end to end: the portable kernels and the AVX2 ones give the
// same maps bit for bit; fp16 and bf16 wire bytes give exactly the maps of
// their decoded fp32 values (decoding is exact, nothing else changes); and
// a second pass of the same shape reuses the first one's pooled buffers.
v1::LayerChunk Encoded(const v1::LayerChunk& fp32, v1::DType dtype, std::vector<float>* decoded) {
  v1::LayerChunk c = fp32;
  const std::string& in = fp32.attention().data();
  const size_t count = in.size() / 4;
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    float x;
    std::memcpy(&x, in.data() + 4 * i, 4);
    uint16_t bits;
    float back;
    if (dtype == v1::DTYPE_FP16) {
      bits = Eigen::numext::bit_cast<uint16_t>(Eigen::half(x));
      back = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
    } else {
      bits = Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(x));
      back = static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(bits));
    }
    out.append(reinterpret_cast<const char*>(&bits), 2);
    decoded->push_back(back);
  }
  c.mutable_attention()->set_dtype(dtype);
  c.mutable_attention()->set_data(out);
  return c;
}

std::vector<float> RunPass(const v1::PassHeader& h, const std::vector<std::vector<v1::LayerChunk>>& layers) {
  auto session = Open(h);
  for (const auto& chunks : layers) {
    for (const v1::LayerChunk& c : chunks) {
      const absl::Status s = session->AddChunk(c);
      EXPECT_TRUE(s.ok()) << s;
    }
  }
  absl::StatusOr<v1::ExplainResponse> r = session->Finish();
  EXPECT_TRUE(r.ok()) << r.status();
  std::vector<float> all;
  if (!r.ok()) return all;
  for (const v1::AnalysisResult& res : r->results()) {
    for (const v1::Tensor& t : res.maps()) {
      const std::vector<float> v = testing::MapValues(t);
      all.insert(all.end(), v.begin(), v.end());
    }
  }
  return all;
}

TEST(PassSessionTest, WirePathSameMapsForEveryKernelBuildAndDtype) {
  std::mt19937 rng(17);
  const int L = 3, H = 5, n = 41;
  for (bool causal : {false, true}) {
    // Sequence 1 is padded: its valid n - 6 tokens are a block of their own.
    auto a = testing::MakeAttention(2, L, H, n, [&](int64_t b, int64_t, int64_t) {
      const int v = b == 0 ? n : n - 6;
      analysis::MatrixF m = testing::RandomStochastic(n, rng);
      m.topLeftCorner(v, v) = testing::RandomStochastic(v, rng);
      if (causal) {
        for (int i = 0; i < v; ++i) {
          m.row(i).segment(i + 1, v - i - 1).setZero();
          m.row(i).head(v) /= m.row(i).head(v).sum();
        }
      }
      return m;
    });
    v1::PassHeader h = testing::RolloutHeader(a);
    // The values decoded from fp16 / bf16, sent as fp32, keep those dtypes' row sums.
    h.set_row_sum_tolerance(0.02f);
    h.mutable_layout()->set_causal(causal);
    h.mutable_layout()->add_valid_lengths(n);
    h.mutable_layout()->add_valid_lengths(n - 6);
    h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(3);
    h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(0);
    v1::RolloutOptions* per_layer = h.add_analyses()->mutable_rollout();
    per_layer->set_per_layer(true);
    per_layer->set_fusion(v1::HEAD_FUSION_MAX);
    per_layer->mutable_readout()->set_mean_of_rows(true);
    h.add_analyses()->mutable_rollout()->set_fusion(v1::HEAD_FUSION_NONE);
    std::vector<std::vector<v1::LayerChunk>> fp32, fp16, bf16, fp16_values, bf16_values;
    for (int l = 0; l < L; ++l) {
      fp32.push_back(testing::ChunksOf(a, l, 2));  // heads split over messages: 2 + 2 + 1
      std::vector<float> d16, db16;
      fp16.emplace_back();
      bf16.emplace_back();
      for (const v1::LayerChunk& c : fp32.back()) {
        d16.clear();
        db16.clear();
        fp16.back().push_back(Encoded(c, v1::DTYPE_FP16, &d16));
        bf16.back().push_back(Encoded(c, v1::DTYPE_BF16, &db16));
        v1::LayerChunk c16 = c, cb16 = c;
        c16.mutable_attention()->set_data(std::string(reinterpret_cast<const char*>(d16.data()), d16.size() * 4));
        cb16.mutable_attention()->set_data(std::string(reinterpret_cast<const char*>(db16.data()), db16.size() * 4));
        fp16_values.emplace_back().push_back(c16);
        bf16_values.emplace_back().push_back(cb16);
      }
    }
    const analysis::KernelIsa active = analysis::ActiveKernelIsa();
    analysis::SetActiveKernelIsa(analysis::KernelIsa::kPortable);
    const std::vector<float> portable = RunPass(h, fp32);
    const std::vector<float> portable16 = RunPass(h, fp16);
    const std::vector<float> portable_bf16 = RunPass(h, bf16);
    analysis::SetActiveKernelIsa(active);
    const std::vector<float> best = RunPass(h, fp32);
    EXPECT_EQ(portable, best) << "causal " << causal << ": " << analysis::KernelIsaName(active);
    EXPECT_EQ(portable16, RunPass(h, fp16));
    EXPECT_EQ(portable_bf16, RunPass(h, bf16));
    EXPECT_EQ(RunPass(h, fp16), RunPass(h, fp16_values));
    EXPECT_EQ(RunPass(h, bf16), RunPass(h, bf16_values));
    EXPECT_FALSE(best.empty());
  }
}

TEST(PassSessionTest, PassesOfOneShapeReusePooledBuffers) {
  UsePooledPassBuffers(int64_t{64} << 20);
  std::mt19937 rng(2);
  const int L = 4, H = 3, n = 150;  // 90 KB fused matrices: mapped, pooled
  auto a = testing::MakeAttention(1, L, H, n, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(n, rng);
  });
  std::vector<std::vector<v1::LayerChunk>> layers;
  for (int l = 0; l < L; ++l) layers.push_back(testing::ChunksOf(a, l));
  const v1::PassHeader h = testing::RolloutHeader(a);
  const std::vector<float> first = RunPass(h, layers);
  const runtime::BufferPool::Stats after_first = PassBufferPool().stats();
  EXPECT_GT(after_first.cached_bytes, 0);
  const std::vector<float> second = RunPass(h, layers);
  const runtime::BufferPool::Stats after_second = PassBufferPool().stats();
  EXPECT_EQ(after_second.mapped, after_first.mapped);  // nothing new mapped
  EXPECT_GE(after_second.reused - after_first.reused, L - 1);
  EXPECT_EQ(first, second);
  UsePooledPassBuffers(0);
}

// A large message shared with an idle worker gives the serial maps bit for
// bit, and the same first error (the first bad strip in order).
TEST(PassSessionTest, HelpersGiveTheSerialMapsAndErrors) {
  std::mt19937 rng(8);
  const int L = 2, H = 5, n = 480;  // 4.6 MB messages: shared with helpers
  auto a = testing::MakeAttention(1, L, H, n, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(n, rng);
  });
  std::vector<std::vector<v1::LayerChunk>> layers;
  for (int l = 0; l < L; ++l) layers.push_back(testing::ChunksOf(a, l));
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(7);
  h.add_analyses()->mutable_rollout()->set_per_layer(true);
  runtime::WorkerPool pool(2, 1, 16);
  auto run = [&](bool helpers, const std::vector<std::vector<v1::LayerChunk>>& in) {
    auto session = Open(h);
    if (helpers) session->UseHelpers(&pool, 1);
    absl::Status status;
    for (const auto& chunks : in) {
      for (const v1::LayerChunk& c : chunks) {
        if (status.ok()) status = session->AddChunk(c);
      }
    }
    std::vector<float> all;
    if (!status.ok()) return std::make_pair(std::string(status.message()), all);
    absl::StatusOr<v1::ExplainResponse> r = session->Finish();
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return std::make_pair(std::string(r.status().message()), all);
    for (const v1::AnalysisResult& res : r->results()) {
      const std::vector<float> v = testing::MapValues(res.maps(0));
      all.insert(all.end(), v.begin(), v.end());
    }
    return std::make_pair(std::string(), all);
  };
  const auto serial = run(false, layers);
  const auto shared = run(true, layers);
  ASSERT_FALSE(serial.second.empty());
  EXPECT_EQ(serial.second, shared.second);
  // Two bad rows in late strips of layer 1: the earlier one is reported.
  auto bad = layers;
  float* v = reinterpret_cast<float*>(bad[1][0].mutable_attention()->mutable_data()->data());
  v[(2 * n + 400) * n + 3] = -0.5f;  // head 2, row 400
  v[(3 * n + 100) * n + 9] = 7.0f;   // head 3, row 100
  const auto want = run(false, bad);
  EXPECT_THAT(want.first, HasSubstr("attention (layer 1, head 3, sequence 0, row 100)"));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(run(true, bad).first, want.first);
}

}  // namespace
}  // namespace attnroll::session
