// Every RPC against a real in-process server on 127.0.0.1:0, and every
// bad input arriving over the wire.

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include <google/protobuf/util/message_differencer.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/cpp/attnroll_client.h"
#include "tests/testutil/server_fixture.h"

namespace attnroll::rpc {
namespace {

using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

using testing::ServerTest;
using testing::ViewOf;

std::vector<float> UniformRollout(int n, int L, int row) {
  const float p = std::pow(0.5f, L);
  std::vector<float> expected(n, (1 - p) / n);
  expected[row] += p;
  return expected;
}

TEST_F(ServerTest, GetServerInfoReportsLimits) {
  auto info = client_->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version(), ATTNROLL_VERSION);
  EXPECT_EQ(info->limits().max_tokens(), 1024u);
  EXPECT_EQ(info->limits().workers(), 2u);
  EXPECT_THAT(info->analyses(), ::testing::ElementsAre("rollout", "grad-rollout", "flow", "compare", "audit", "explain-pair"));
  EXPECT_EQ(info->limits().max_flow_cost(), 1e11);
}

TEST_F(ServerTest, ExplainUniformClosedFormOverEveryWireDtype) {
  // n = 8: 1/8 is exact in fp16 and bf16, so every wire gives the closed form.
  auto a = testing::UniformAttention(1, 4, 6, 8);
  for (v1::DType wire : {v1::DTYPE_FP32, v1::DTYPE_FP16, v1::DTYPE_BF16}) {
    v1::PassHeader h = testing::RolloutHeader(a);
    h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(5);
    client::ExplainOptions opts;
    opts.wire = wire;
    opts.max_message_bytes = 1024 + 2 * 64 * 4;  // 2 heads per message: layers split by head range
    client::CallStats stats;
    auto r = client_->Explain(h, ViewOf(a), opts, &stats);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(stats.messages_sent, 1 + 4 * (wire == v1::DTYPE_FP32 ? 3 : 2));
    EXPECT_EQ(r->request_id(), "test");
    ASSERT_EQ(r->results(0).maps_size(), 1);
    EXPECT_THAT(r->results(0).maps(0).shape(), ::testing::ElementsAre(1, 8));
    EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-6), UniformRollout(8, 4, 5)));
  }
}

TEST_F(ServerTest, BadInputsGetInvalidArgumentNamingTheField) {
  auto a = testing::UniformAttention(1, 2, 2, 4);
  const v1::PassHeader h = testing::RolloutHeader(a);
  const std::vector<v1::ExplainRequest> good = Pass(a, h);  // header, layer 0, layer 1
  ASSERT_EQ(good.size(), 3u);
  auto expect_invalid = [&](std::vector<v1::ExplainRequest> msgs, const std::string& needle) {
    auto r = RawExplain(msgs);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << needle << ": " << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(needle));
  };
  expect_invalid({}, "header: expected a PassHeader as the first message");
  expect_invalid({good[1]}, "expected a PassHeader as the first message, got a layer");
  expect_invalid({good[0], good[0]}, "header: duplicate");
  expect_invalid({good[0], good[2]}, "layer: out of order: expected layer 0, got 1");
  expect_invalid({good[0], good[1], good[1]}, "layer: duplicate: layer 0");
  expect_invalid({good[0], good[1]}, "layer: missing: the stream ended after 1 complete layers");
  expect_invalid({good[0], v1::ExplainRequest()}, "message: expected a header or a layer");

  auto mutate = [&](auto f) {
    std::vector<v1::ExplainRequest> m = good;
    f(m[1].mutable_layer()->mutable_attention());
    return m;
  };
  expect_invalid(mutate([](v1::Tensor* t) { t->mutable_data()->pop_back(); }),
                 "layer[0].attention.data: expected 32 elements x 4 bytes (FP32) = 128 bytes, got 127");
  expect_invalid(mutate([](v1::Tensor* t) { t->set_dtype(static_cast<v1::DType>(7)); }),
                 "layer[0].attention.dtype: expected FP32, FP16 or BF16, got 7");
  expect_invalid(mutate([](v1::Tensor* t) { t->set_shape(1, 3); }), "layer[0].attention.data");
  expect_invalid(mutate([](v1::Tensor* t) {
                   t->clear_shape();
                   for (int i = 0; i < 4; ++i) t->add_shape(int64_t{1} << 40);
                 }),
                 "shape: element count overflows");
  auto set_value = [&](int index, float v) {
    return mutate([=](v1::Tensor* t) { reinterpret_cast<float*>(t->mutable_data()->data())[index] = v; });
  };
  expect_invalid(set_value(5, NAN), "attention (layer 0, head 0, sequence 0, row 1): expected finite values");
  expect_invalid(set_value(5, INFINITY), "expected finite values");
  expect_invalid(set_value(20, -0.25f), "(layer 0, head 1, sequence 0, row 1): expected probabilities >= 0");
  expect_invalid(set_value(0, 0.5f), "row 0): expected the row over the 4 valid tokens to sum to 1");

  v1::PassHeader bad = h;
  bad.mutable_layout()->set_prefix_tokens(1);
  bad.mutable_layout()->mutable_grid()->set_height(2);
  bad.mutable_layout()->mutable_grid()->set_width(2);
  expect_invalid({HeaderMsg(bad)}, "grid: 2x2 = 4 cells, expected valid length - prefix_tokens = 4 - 1 = 3");
  bad = h;
  bad.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(4);
  expect_invalid({HeaderMsg(bad)}, "readout.rows: row 4 out of range");
  bad = h;
  bad.mutable_analyses(0)->mutable_rollout()->set_fusion(v1::HEAD_FUSION_WEIGHTED);
  bad.mutable_analyses(0)->mutable_rollout()->add_head_weights(1);
  expect_invalid({HeaderMsg(bad)}, "head_weights: expected 2 weights (one per head), got 1");
  bad = h;
  bad.mutable_layout()->add_valid_lengths(5);
  expect_invalid({HeaderMsg(bad)}, "layout.valid_lengths[0]: expected 1 <= length <= num_tokens = 4, got 5");
  bad = h;
  bad.mutable_layout()->set_causal(true);
  expect_invalid({HeaderMsg(bad), good[1], good[2]},
                 "causal layout expects no attention above the diagonal");

  // The server is still healthy after all of that.
  auto r = RawExplain(good);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-6), UniformRollout(4, 2, 0)));
}

TEST_F(ServerTest, GradientRolloutOverTheWireAndItsBadInputs) {
  // Uniform attention, unit gradient: Ab = U, At = I + U, (I + U)^L = I + (2^L - 1) U.
  const int n = 8, L = 3;
  auto a = testing::UniformAttention(1, L, 4, n);
  std::vector<float> ones(a.values.size(), 1.0f);
  client::AttentionView view = ViewOf(a);
  view.gradient = ones.data();
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_analyses(0)->mutable_rollout()->mutable_gradient()->set_rule(v1::GRADIENT_RULE_CHEFER);
  for (v1::DType wire : {v1::DTYPE_FP32, v1::DTYPE_BF16}) {
    client::ExplainOptions opts;
    opts.wire = wire;
    opts.max_message_bytes = 1024 + 2 * 2 * n * n * 4;  // 2 heads + gradients per message
    auto r = client_->Explain(h, view, opts);
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<float> expected(n, 7.0f / n);
    expected[0] += 1.0f;
    EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-5), expected));
  }

  auto expect_invalid = [&](const v1::PassHeader& header, const client::AttentionView& v,
                            const std::string& needle) {
    auto r = client_->Explain(header, v, {});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << needle << ": " << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(needle));
  };
  expect_invalid(h, ViewOf(a), "layer[0].gradient: expected a gradient");
  expect_invalid(testing::RolloutHeader(a), view, "no analysis is gradient-weighted, but a gradient was sent");
  std::vector<float> bad = ones;
  bad[5 * n * n + 3] = NAN;  // layer 1, head 1
  client::AttentionView nan_view = view;
  nan_view.gradient = bad.data();
  expect_invalid(h, nan_view, "gradient (layer 1, head 1, sequence 0, row 0): expected finite values");
  v1::PassHeader bad_rule = h;
  bad_rule.mutable_analyses(0)->mutable_rollout()->mutable_gradient()->set_rule(
      static_cast<v1::GradientRule>(5));
  expect_invalid(bad_rule, view, "rollout.gradient.rule: expected CHEFER or VIT_EXPLAIN, got 5");
  v1::PassHeader bad_prune = testing::RolloutHeader(a);
  bad_prune.mutable_analyses(0)->mutable_rollout()->mutable_pruning()->set_discard_ratio(1.0f);
  expect_invalid(bad_prune, ViewOf(a), "pruning.discard_ratio: expected 0 <= ratio < 1, got 1");

  // A gradient whose shape differs from the attention's.
  auto msgs = Pass(a, testing::RolloutHeader(a));
  msgs[0] = HeaderMsg(h);
  for (size_t i = 1; i < msgs.size(); ++i) {
    v1::Tensor* g = msgs[i].mutable_layer()->mutable_gradient();
    *g = msgs[i].layer().attention();
    g->set_shape(1, 2);
    g->mutable_data()->resize(g->data().size() / 2);
  }
  auto r = RawExplain(msgs);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("layer[0].gradient.shape: expected the attention's shape [1, 4, 8, 8], got [1, 2, 8, 8]"));
}

TEST_F(ServerTest, ResidualWeightsAndValueNormsClosedFormsAndBadInputs) {
  // Uniform attention with value norms v: every row becomes v / |v| =: P (P^2 = P),
  // so L layers roll out to 0.5^L I + (1 - 0.5^L) P.
  const int n = 5, L = 3, H = 2;
  auto a = testing::UniformAttention(1, L, H, n);
  std::vector<float> norms(L * H * n);
  for (size_t i = 0; i < norms.size(); ++i) norms[i] = static_cast<float>(1 + i % n);  // 1..5
  client::AttentionView view = ViewOf(a);
  view.value_norms = norms.data();
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(1);
  client::ExplainOptions opts;
  opts.max_message_bytes = 1024 + n * n * 4 + n * 4;  // one head per message
  auto r = client_->Explain(h, view, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  const float p = std::pow(0.5f, L);
  std::vector<float> expected;
  for (int j = 0; j < n; ++j) expected.push_back((1 - p) * (1 + j) / 15.0f + (j == 1 ? p : 0.0f));
  EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-6), expected));

  // One layer with a residual weight per query token: row i = (1 - a_i) / n + a_i e_i.
  auto one = testing::UniformAttention(1, 1, H, n);
  std::vector<float> weights = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f};
  client::AttentionView wview = ViewOf(one);
  wview.residual_weights = weights.data();
  wview.residual_per_token = true;
  v1::PassHeader h1 = testing::RolloutHeader(one);
  for (int i = 0; i < n; ++i) h1.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(i);
  r = client_->Explain(h1, wview, {});
  ASSERT_TRUE(r.ok()) << r.status();
  expected.clear();
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) expected.push_back((1 - weights[i]) / n + (i == j ? weights[i] : 0.0f));
  }
  EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-6), expected));

  auto expect_invalid = [&](const v1::PassHeader& header, const client::AttentionView& v,
                            const std::string& needle, int64_t max_bytes = int64_t{4} << 20) {
    client::ExplainOptions o;
    o.max_message_bytes = max_bytes;
    auto res = client_->Explain(header, v, o);
    EXPECT_EQ(res.status().code(), absl::StatusCode::kInvalidArgument) << needle << ": " << res.status();
    EXPECT_THAT(std::string(res.status().message()), HasSubstr(needle));
  };
  weights[3] = 1.5f;
  expect_invalid(h1, wview, "layer[0].residual_weights: expected weights in [0, 1], got 1.5 (sequence 0, token 3)");
  std::vector<float> bad_norms = norms;
  bad_norms[7] = -1.0f;  // layer 0, head 1, token 2
  client::AttentionView nview = view;
  nview.value_norms = bad_norms.data();
  expect_invalid(h, nview, "layer[0].value_norms: expected finite norms >= 0, got -1 (sequence 0, head 1, token 2)");

  // Raw messages: residual weights on a layer's second message; value norms on
  // the first message only; a wrong shape.
  auto msgs = Pass(a, testing::RolloutHeader(a));
  auto chunks = client::LayerChunks(view, 0, v1::DTYPE_FP32, 1024 + n * n * 4 + n * 4);
  ASSERT_EQ(chunks.size(), 2u);
  msgs[1] = LayerMsg(chunks[0]);  // layer 0 head 0 with value norms, then layers without
  auto res = RawExplain({msgs[0], msgs[1], LayerMsg(client::LayerChunks(ViewOf(a), 0, v1::DTYPE_FP32, 1024 + n * n * 4)[1])});
  EXPECT_THAT(std::string(res.status().message()), HasSubstr("expected value norms (the pass's first message had them), got none"));
  v1::LayerChunk second = chunks[1];
  second.mutable_residual_weights()->set_dtype(v1::DTYPE_FP32);
  second.mutable_residual_weights()->add_shape(1);
  second.mutable_residual_weights()->set_data(std::string(4, '\0'));
  res = RawExplain({msgs[0], LayerMsg(chunks[0]), LayerMsg(second)});
  EXPECT_THAT(std::string(res.status().message()), HasSubstr("residual_weights: expected on the layer's first message (head_start 0), got head_start 1"));
  v1::LayerChunk wrong = chunks[0];
  wrong.mutable_value_norms()->set_shape(2, n - 1);
  wrong.mutable_value_norms()->mutable_data()->resize((n - 1) * 4);
  res = RawExplain({msgs[0], LayerMsg(wrong)});
  EXPECT_THAT(std::string(res.status().message()), HasSubstr("layer[0].value_norms.shape: expected [1, 1, 5], got [1, 1, 4]"));
}

TEST_F(ServerTest, FlowReportsProgressOnTheStreamAndMatchesExplain) {
  std::mt19937 rng(3);
  auto a = testing::MakeAttention(1, 3, 2, 12, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(12, rng, 3.0f);
  });
  v1::PassHeader h = testing::RolloutHeader(a);
  v1::FlowOptions* flow = h.mutable_analyses(0)->mutable_flow();
  flow->set_all_rows(true);
  std::vector<v1::Progress> progress;
  auto streamed = client_->ExplainWithProgress(h, ViewOf(a), {}, [&](const v1::Progress& p) {
    progress.push_back(p);
  });
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_FALSE(progress.empty());
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_GT(progress[i].done(), progress[i - 1].done());
  EXPECT_EQ(progress.back().done(), 144u);  // 12 output x 12 input tokens
  EXPECT_EQ(progress.back().total(), 144u);
  EXPECT_LE(progress.size(), 101u);
  auto unary = client_->Explain(h, ViewOf(a), {});
  ASSERT_TRUE(unary.ok()) << unary.status();
  EXPECT_EQ(streamed->results(0).path(), "flow");
  EXPECT_THAT(streamed->results(0).maps(0).shape(), ::testing::ElementsAre(12, 12));
  EXPECT_EQ(testing::MapValues(streamed->results(0).maps(0)), testing::MapValues(unary->results(0).maps(0)));
  // Each row is normalised: sums to 1.
  const std::vector<float> maps = testing::MapValues(unary->results(0).maps(0));
  for (int r = 0; r < 12; ++r) {
    float sum = 0;
    for (int j = 0; j < 12; ++j) sum += maps[r * 12 + j];
    EXPECT_NEAR(sum, 1.0f, 1e-5);
  }
}

TEST_F(ServerTest, FlowStopsAtItsDeadlineBetweenMaxFlowsAndFreesItsMemory) {
  // The full 197 x 197 flow matrix of a ViT-sized pass takes seconds; a 300 ms
  // deadline must end it early, with DEADLINE_EXCEEDED, and free the pass.
  std::mt19937 rng(5);
  auto a = testing::MakeAttention(1, 12, 2, 197, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(197, rng, 1.0f);
  });
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_analyses(0)->mutable_flow()->set_all_rows(true);
  client::ExplainOptions opts;
  opts.max_message_bytes = 1 << 20;
  opts.timeout = absl::Milliseconds(300);
  auto r = client_->Explain(h, ViewOf(a), opts);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  // The reservation is released when the worker leaves the flow: it must not
  // run the whole matrix to completion.
  for (int i = 0; i < 250 && server_->memory_reserved() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(server_->memory_reserved(), 0);
}

// Encoder-decoder relevance, recomputed here from the formulas in plain Eigen.
namespace encdec {
using analysis::MatrixF;
MatrixF MeanPosProduct(const testing::Attention& a, const std::vector<float>& g, int l) {
  const int64_t rows = a.values.size() / (a.layers * a.heads * a.tokens);
  MatrixF sum = MatrixF::Zero(rows, a.tokens);
  for (int h = 0; h < a.heads; ++h) {
    const int64_t off = (int64_t{l} * a.heads + h) * rows * a.tokens;
    for (int64_t i = 0; i < rows * a.tokens; ++i) {
      sum.data()[i] += std::max(0.0f, a.values[off + i] * g[off + i]);
    }
  }
  return sum / static_cast<float>(a.heads);
}
MatrixF Bar(MatrixF r) {
  r -= MatrixF::Identity(r.rows(), r.cols());
  for (int i = 0; i < r.rows(); ++i) {
    const float s = r.row(i).sum();
    r.row(i) = s != 0 ? (r.row(i) / s).eval() : MatrixF::Zero(1, r.cols());
  }
  return r + MatrixF::Identity(r.rows(), r.cols());
}
}  // namespace encdec

TEST_F(ServerTest, EncoderDecoderRulesAndRolloutCompositions) {
  std::mt19937 rng(8);
  const int ne = 6, nd = 4, H = 2, Le = 2, Ld = 2;
  auto enc = testing::MakeAttention(1, Le, H, ne, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(ne, rng, 2.0f);
  });
  auto dec = testing::MakeAttention(1, Ld, H, nd, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(nd, rng, 2.0f);
  });
  // Cross-attention: nd x ne rows, stored in an Attention with tokens = ne.
  testing::Attention cross{1, Ld, H, ne, {}};
  for (int i = 0; i < Ld * H; ++i) {
    analysis::MatrixF c = testing::RandomStochastic(ne, rng, 2.0f).topRows(nd);
    cross.values.insert(cross.values.end(), c.data(), c.data() + c.size());
  }
  std::normal_distribution<float> normal;
  auto grad = [&](size_t n) {
    std::vector<float> g(n);
    for (float& x : g) x = normal(rng);
    return g;
  };
  std::vector<float> ge = grad(enc.values.size()), gd = grad(dec.values.size()), gc = grad(cross.values.size());
  client::EncoderDecoderView view{ViewOf(enc), ViewOf(dec), ViewOf(cross)};
  view.cross.query_tokens = nd;
  view.encoder.gradient = ge.data();
  view.decoder.gradient = gd.data();
  view.cross.gradient = gc.data();

  using encdec::MatrixF;
  // Rules: R_ee += Ab R_ee; R_dd += Ab R_dd, R_de += Ab R_de; R_de += Rbar_dd^T Ab_x Rbar_ee.
  MatrixF ree = MatrixF::Identity(ne, ne), rdd = MatrixF::Identity(nd, nd), rde = MatrixF::Zero(nd, ne);
  for (int l = 0; l < Le; ++l) ree += encdec::MeanPosProduct(enc, ge, l) * ree;
  for (int l = 0; l < Ld; ++l) {
    const MatrixF ab = encdec::MeanPosProduct(dec, gd, l);
    rdd += ab * rdd;
    rde += ab * rde;
    rde += encdec::Bar(rdd).transpose() * encdec::MeanPosProduct(cross, gc, l) * encdec::Bar(ree);
  }
  v1::PassHeader h;
  h.set_request_id("ed");
  h.mutable_layout()->mutable_encoder_decoder();
  v1::EncoderDecoderOptions* o = h.add_analyses()->mutable_encoder_decoder();
  o->set_return_encoder(true);
  o->set_return_decoder(true);
  auto r = client_->ExplainEncoderDecoder(h, view, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->results(0).maps(0).shape(), ::testing::ElementsAre(nd, ne));
  EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-5), testing::Flat(rde)));
  EXPECT_THAT(testing::MapValues(r->results(0).encoder_maps(0)), Pointwise(FloatNear(1e-5), testing::Flat(ree)));
  EXPECT_THAT(testing::MapValues(r->results(0).decoder_maps(0)), Pointwise(FloatNear(1e-5), testing::Flat(rdd)));

  // Rollout composition (no gradients): R_de = R_dd^T (Abar_cross_last R_ee).
  auto rollout = [](const testing::Attention& a, int L, int n) {
    MatrixF r = MatrixF::Identity(n, n);
    for (int l = 0; l < L; ++l) {
      MatrixF f = MatrixF::Zero(n, n);
      for (int hh = 0; hh < a.heads; ++hh) {
        f += Eigen::Map<const MatrixF>(a.values.data() + (int64_t{l} * a.heads + hh) * n * n, n, n);
      }
      MatrixF at = 0.5f * f / static_cast<float>(a.heads) + 0.5f * MatrixF::Identity(n, n);
      for (int i = 0; i < n; ++i) at.row(i) /= at.row(i).sum();
      r = at * r;
    }
    return r;
  };
  MatrixF cross_last = MatrixF::Zero(nd, ne);
  for (int hh = 0; hh < H; ++hh) {
    cross_last += Eigen::Map<const MatrixF>(cross.values.data() + (int64_t{Ld - 1} * H + hh) * nd * ne, nd, ne);
  }
  cross_last /= static_cast<float>(H);
  const MatrixF expected = rollout(dec, Ld, nd).transpose() * (cross_last * rollout(enc, Le, ne));
  o->set_composition(v1::COMPOSITION_ROLLOUT);
  o->mutable_readout()->add_rows(3);
  o->mutable_readout()->add_rows(0);
  client::EncoderDecoderView plain{ViewOf(enc), ViewOf(dec), ViewOf(cross)};
  plain.cross.query_tokens = nd;
  r = client_->ExplainEncoderDecoder(h, plain, {});
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<float> rows = testing::Flat(expected.row(3));
  const std::vector<float> row0 = testing::Flat(expected.row(0));
  rows.insert(rows.end(), row0.begin(), row0.end());
  EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-5), rows));

  // Bad inputs: rules without gradients, stacks out of order, wrong cross shape.
  o->set_composition(v1::COMPOSITION_RULES);
  auto bad = client_->ExplainEncoderDecoder(h, plain, {});
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("the RULES composition needs a gradient"));
  // Square cross-attention [B, h, ne, ne] where [B, h, nd, ne] is due.
  auto square = testing::MakeAttention(1, Ld, H, ne, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(ne, rng, 2.0f);
  });
  std::vector<float> gsquare(square.values.size(), 1.0f);
  client::EncoderDecoderView swapped = view;
  swapped.cross = ViewOf(square);
  swapped.cross.gradient = gsquare.data();
  bad = client_->ExplainEncoderDecoder(h, swapped, {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  v1::PassHeader mixed = h;
  mixed.add_analyses()->mutable_rollout();
  bad = client_->ExplainEncoderDecoder(mixed, view, {});
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("takes encoder_decoder analyses only"));
}

// Audit helpers: an 8x8 map with its mass in the left (or right) half.
v1::Tensor HalfMap(std::mt19937& rng, bool right) {
  std::uniform_real_distribution<float> u(0.5f, 1.0f);
  std::vector<float> m(64, 0.0f);
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) {
      if ((c >= 4) == right) m[r * 8 + c] = u(rng);
    }
  }
  v1::Tensor t;
  t.set_dtype(v1::DTYPE_FP32);
  t.add_shape(8);
  t.add_shape(8);
  t.set_data(std::string(reinterpret_cast<const char*>(m.data()), m.size() * 4));
  return t;
}

struct AuditRun {
  std::vector<v1::AuditItemResult> items;
  v1::AuditReport report;
  grpc::Status status;
};

AuditRun RunAudit(v1::AttnrollService::Stub* stub, const v1::AuditHeader& header,
                  const std::vector<v1::AuditItem>& items) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub->Audit(&ctx);
  std::thread writer([&] {
    v1::AuditRequest r;
    *r.mutable_header() = header;
    stream->Write(r);
    for (const auto& item : items) {
      *r.mutable_item() = item;
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
  });
  AuditRun run;
  v1::AuditResponse resp;
  while (stream->Read(&resp)) {
    if (resp.has_item()) run.items.push_back(resp.item());
    if (resp.has_report()) run.report = resp.report();
  }
  writer.join();
  run.status = stream->Finish();
  return run;
}

TEST_F(ServerTest, AuditDetectsAPlantedShiftInAnyOrderAndReportsBadItemsInBand) {
  std::mt19937 rng(12);
  v1::AuditHeader header;
  header.mutable_compare()->set_grid_height(8);
  header.mutable_compare()->set_grid_width(8);
  v1::Tensor left_mask;  // the region: the left half
  left_mask.set_dtype(v1::DTYPE_FP32);
  left_mask.add_shape(64);
  std::vector<float> mask(64);
  for (int i = 0; i < 64; ++i) mask[i] = (i % 8) < 4 ? 1.0f : 0.0f;
  left_mask.set_data(std::string(reinterpret_cast<const char*>(mask.data()), 256));
  *header.mutable_compare()->mutable_region() = left_mask;
  header.mutable_thresholds()->set_max_emd(1.0);
  header.mutable_thresholds()->set_max_region_share_drop(0.5);
  std::vector<v1::AuditItem> items;
  for (int i = 0; i < 24; ++i) {
    v1::AuditItem item;
    item.set_id(absl::StrCat("img", i));
    item.set_group(i % 2 ? "night" : "day");
    *item.mutable_baseline() = HalfMap(rng, false);
    // Items 0..15: the candidate moved its reliance to the right half; 16..23 did not.
    *item.mutable_candidate() = i < 16 ? HalfMap(rng, true) : item.baseline();
    items.push_back(item);
  }
  AuditRun run = RunAudit(client_->stub(), header, items);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.items.size(), 24u);
  int flagged = 0;
  for (const auto& r : run.items) {
    EXPECT_FALSE(r.has_error()) << r.error().message();
    const int i = std::stoi(r.id().substr(3));
    EXPECT_EQ(r.drift_flags_size() > 0, i < 16) << r.id();
    flagged += r.drift_flags_size() > 0;
  }
  EXPECT_EQ(flagged, 16);
  const v1::AuditAggregate& all = run.report.overall();
  EXPECT_EQ(all.items(), 24);
  EXPECT_EQ(all.drifted(), 16);
  EXPECT_EQ(all.flag_counts().at("max_emd"), 16);
  EXPECT_EQ(all.region().dropped(), 16);
  EXPECT_EQ(all.region().unchanged(), 8);
  ASSERT_EQ(run.report.groups_size(), 2);
  EXPECT_EQ(run.report.groups(0).group(), "day");
  const std::vector<float> shift = testing::MapValues(all.mean_shift());
  ASSERT_EQ(shift.size(), 64u);
  for (int i = 0; i < 64; ++i) {
    if (i % 8 < 4) EXPECT_LT(shift[i], 0.0f) << i; else EXPECT_GT(shift[i], 0.0f) << i;
  }

  // The same items in another order: the same report.
  std::vector<v1::AuditItem> shuffled = items;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  AuditRun again = RunAudit(client_->stub(), header, shuffled);
  ASSERT_TRUE(again.status.ok());
  google::protobuf::util::MessageDifferencer differ;
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  EXPECT_TRUE(differ.Compare(run.report, again.report)) << differences;

  // Identical models: no drift at all.
  std::vector<v1::AuditItem> same = items;
  for (auto& item : same) *item.mutable_candidate() = item.baseline();
  AuditRun none = RunAudit(client_->stub(), header, same);
  EXPECT_EQ(none.report.overall().drifted(), 0);

  // A bad item is refused in-band; the others go on.
  std::vector<v1::AuditItem> with_bad = {items[0], items[1]};
  with_bad[1].mutable_candidate()->mutable_data()->resize(40);
  with_bad[1].mutable_candidate()->set_shape(0, 10);
  with_bad[1].mutable_candidate()->set_shape(1, 1);
  with_bad.push_back(items[0]);  // a duplicate id
  AuditRun bad = RunAudit(client_->stub(), header, with_bad);
  ASSERT_TRUE(bad.status.ok());
  int errors = 0;
  for (const auto& r : bad.items) errors += r.has_error();
  EXPECT_EQ(errors, 2);
  EXPECT_EQ(bad.report.overall().items(), 1);

  // No header: INVALID_ARGUMENT.
  grpc::ClientContext ctx;
  auto stream = client_->stub()->Audit(&ctx);
  v1::AuditRequest r;
  *r.mutable_item() = items[0];
  stream->Write(r);
  stream->WritesDone();
  v1::AuditResponse resp;
  while (stream->Read(&resp)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, ExplainPairReturnsBothMapsAndTheirComparison) {
  std::mt19937 rng(31);
  auto random = [&](int64_t, int64_t, int64_t) { return testing::RandomStochastic(10, rng, 2.0f); };
  auto base = testing::MakeAttention(2, 3, 2, 10, random);
  auto cand = testing::MakeAttention(2, 3, 2, 10, random);
  v1::PassHeader h = testing::RolloutHeader(base);
  h.mutable_layout()->set_prefix_tokens(1);
  h.mutable_layout()->mutable_grid()->set_height(3);
  h.mutable_layout()->mutable_grid()->set_width(3);
  h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(0);
  h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(4);
  auto pair = client_->ExplainPair(h, v1::CompareOptions(), ViewOf(base), ViewOf(cand));
  ASSERT_TRUE(pair.ok()) << pair.status();
  // Each side equals its own Explain, and the comparisons equal Compare on them.
  auto alone_base = client_->Explain(h, ViewOf(base), {});
  auto alone_cand = client_->Explain(h, ViewOf(cand), {});
  ASSERT_TRUE(alone_base.ok() && alone_cand.ok());
  ASSERT_EQ(pair->comparisons_size(), 4);  // 2 sequences x 2 rows
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(testing::MapValues(pair->baseline().results(0).maps(s)),
              testing::MapValues(alone_base->results(0).maps(s)));
    v1::CompareRequest req;
    *req.mutable_a() = alone_base->results(0).maps(s);
    *req.mutable_b() = alone_cand->results(0).maps(s);
    auto cmp = client_->Compare(req);
    ASSERT_TRUE(cmp.ok()) << cmp.status();
    for (int k = 0; k < 2; ++k) {
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(pair->comparisons(s * 2 + k),
                                                                   cmp->comparisons(k)));
    }
    EXPECT_TRUE(pair->comparisons(s * 2).emd().defined());  // the layout's 3x3 grid was used
  }
  // The same model on both sides: no difference at all.
  auto same = client_->ExplainPair(h, v1::CompareOptions(), ViewOf(base), ViewOf(base));
  ASSERT_TRUE(same.ok());
  for (const auto& c : same->comparisons()) EXPECT_EQ(c.l1(), 0.0);
  // A bad layer on one side names the side.
  std::vector<float> broken = cand.values;
  broken[7] = -1.0f;
  client::AttentionView bad = ViewOf(cand);
  bad.data = broken.data();
  auto r = client_->ExplainPair(h, v1::CompareOptions(), ViewOf(base), bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("candidate attention (layer 0"));
}

TEST_F(ServerTest, AuditTakesItemsAsAttentionPasses) {
  // Item i: baseline attention, candidate = the same (items 0, 1) or other
  // attention (item 2); the maps must be those Explain gives.
  std::mt19937 rng(41);
  auto random = [&](int64_t, int64_t, int64_t) { return testing::RandomStochastic(10, rng, 2.0f); };
  std::vector<testing::Attention> base, cand;
  for (int i = 0; i < 3; ++i) {
    base.push_back(testing::MakeAttention(1, 2, 2, 10, random));
    cand.push_back(i < 2 ? base.back() : testing::MakeAttention(1, 2, 2, 10, random));
  }
  v1::AuditHeader header;
  header.set_map_length(9);
  header.mutable_thresholds()->set_max_l1(1e-6);
  grpc::ClientContext ctx;
  auto stream = client_->stub()->Audit(&ctx);
  v1::AuditRequest r;
  *r.mutable_header() = header;
  ASSERT_TRUE(stream->Write(r));
  for (int i = 0; i < 3; ++i) {
    v1::PassHeader h = testing::RolloutHeader(base[i]);
    h.mutable_layout()->set_prefix_tokens(1);
    r.mutable_pass_begin()->set_id(absl::StrCat("item", i));
    *r.mutable_pass_begin()->mutable_pass() = h;
    ASSERT_TRUE(stream->Write(r));
    for (int l = 0; l < 2; ++l) {
      for (bool candidate : {false, true}) {
        for (auto& chunk : client::LayerChunks(ViewOf((candidate ? cand : base)[i]), l, v1::DTYPE_FP32, 1 << 20)) {
          r.mutable_pass_layer()->set_candidate(candidate);
          *r.mutable_pass_layer()->mutable_layer() = chunk;
          ASSERT_TRUE(stream->Write(r));
        }
      }
    }
    r.mutable_pass_end();
    ASSERT_TRUE(stream->Write(r));
  }
  // An item whose candidate layer is bad is refused in-band.
  r.mutable_pass_begin()->set_id("broken");
  *r.mutable_pass_begin()->mutable_pass() = testing::RolloutHeader(base[0]);
  r.mutable_pass_begin()->mutable_pass()->mutable_layout()->set_prefix_tokens(1);
  ASSERT_TRUE(stream->Write(r));
  auto chunk = client::LayerChunks(ViewOf(base[0]), 0, v1::DTYPE_FP32, 1 << 20)[0];
  reinterpret_cast<float*>(chunk.mutable_attention()->mutable_data()->data())[0] = -1;
  r.mutable_pass_layer()->set_candidate(true);
  *r.mutable_pass_layer()->mutable_layer() = chunk;
  ASSERT_TRUE(stream->Write(r));
  r.mutable_pass_end();
  ASSERT_TRUE(stream->Write(r));
  stream->WritesDone();
  std::map<std::string, v1::AuditItemResult> items;
  v1::AuditReport report;
  v1::AuditResponse resp;
  while (stream->Read(&resp)) {
    if (resp.has_item()) items[resp.item().id()] = resp.item();
    if (resp.has_report()) report = resp.report();
  }
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items["item0"].drift_flags_size(), 0);
  EXPECT_EQ(items["item2"].drift_flags_size(), 1);
  EXPECT_GT(items["item2"].comparison().l1(), 0.0);
  EXPECT_THAT(items["broken"].error().message(), HasSubstr("candidate attention (layer 0"));
  EXPECT_EQ(report.overall().items(), 3);
  EXPECT_EQ(report.overall().drifted(), 1);
  EXPECT_EQ(server_->memory_reserved(), 0);
}

TEST_F(ServerTest, AuditUnderAFullQueueAnswersEveryItemAndEnds) {
  runtime::ServerConfig c = Config();
  c.workers = 1;
  c.queue_size = 1;  // items beyond the queue are refused in-band, never dropped
  StartServer(c);
  std::mt19937 rng(2);
  v1::AuditHeader header;
  header.set_map_length(64);
  std::vector<v1::AuditItem> items;
  for (int i = 0; i < 200; ++i) {
    v1::AuditItem item;
    item.set_id(absl::StrCat("i", i));
    *item.mutable_baseline() = HalfMap(rng, false);
    *item.mutable_candidate() = HalfMap(rng, true);
    items.push_back(item);
  }
  AuditRun run = RunAudit(client_->stub(), header, items);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.items.size(), 200u);
  int refused = 0;
  for (const auto& r : run.items) {
    if (r.has_error()) {
      ++refused;
      EXPECT_EQ(r.error().code_name(), "RESOURCE_EXHAUSTED");
    }
  }
  EXPECT_EQ(run.report.overall().items() + refused, 200);
  ExpectMemoryReleased();
}

TEST_F(ServerTest, RandomlyMutatedPassesNeverCrashOrHang) {
  // 300 passes, each a valid pass with one random field mutated; every call
  // must end with a status (OK or a clear error), and the server stays up.
  std::mt19937 rng(99);
  auto a = testing::UniformAttention(2, 3, 2, 6);
  v1::PassHeader base = testing::RolloutHeader(a);
  const std::vector<v1::ExplainRequest> good = Pass(a, base);
  std::uniform_int_distribution<int> pick(0, 11);
  std::uniform_int_distribution<int64_t> dim(-3, 1 << 20);
  int ok = 0;
  for (int round = 0; round < 300; ++round) {
    std::vector<v1::ExplainRequest> msgs = good;
    std::uniform_int_distribution<size_t> which(0, msgs.size() - 1);
    v1::ExplainRequest& m = msgs[which(rng)];
    v1::Tensor* t = m.has_layer() ? m.mutable_layer()->mutable_attention() : nullptr;
    switch (pick(rng)) {
      case 0: if (t) t->set_shape(static_cast<int>(rng() % 4), dim(rng)); break;
      case 1: if (t) t->set_dtype(static_cast<v1::DType>(rng() % 6)); break;
      case 2: if (t) t->mutable_data()->resize(rng() % (t->data().size() + 8)); break;
      case 3: if (t && !t->data().empty()) (*t->mutable_data())[rng() % t->data().size()] = static_cast<char>(rng()); break;
      case 4: if (m.has_layer()) m.mutable_layer()->set_layer(static_cast<uint32_t>(rng() % 5)); break;
      case 5: if (m.has_layer()) m.mutable_layer()->set_head_start(static_cast<uint32_t>(rng() % 4)); break;
      case 6: if (m.has_header()) m.mutable_header()->mutable_layout()->set_num_tokens(static_cast<uint32_t>(rng() % 3000)); break;
      case 7: if (m.has_header()) m.mutable_header()->mutable_layout()->set_prefix_tokens(static_cast<uint32_t>(rng() % 8)); break;
      case 8: if (m.has_header()) m.mutable_header()->mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(static_cast<uint32_t>(rng() % 10)); break;
      case 9: if (m.has_header()) m.mutable_header()->mutable_layout()->add_valid_lengths(static_cast<uint32_t>(rng() % 8)); break;
      case 10: msgs.erase(msgs.begin() + static_cast<int64_t>(which(rng))); break;
      default: msgs.push_back(msgs[which(rng)]); break;
    }
    auto r = RawExplain(msgs, absl::Seconds(10));
    if (r.ok()) {
      ++ok;
    } else {
      const absl::StatusCode code = r.status().code();
      EXPECT_TRUE(code == absl::StatusCode::kInvalidArgument ||
                  code == absl::StatusCode::kResourceExhausted)
          << "round " << round << ": " << r.status();
      EXPECT_FALSE(r.status().message().empty());
    }
  }
  EXPECT_GT(ok, 0);  // some mutations are harmless (e.g. a changed data byte)
  EXPECT_TRUE(client_->GetServerInfo().ok());
  ExpectMemoryReleased();
}

TEST_F(ServerTest, SizeLimitsGetResourceExhausted) {
  // More tokens than max_tokens.
  v1::PassHeader h;
  h.mutable_layout()->set_num_layers(1);
  h.mutable_layout()->set_num_heads(1);
  h.mutable_layout()->set_num_tokens(2000);
  auto r = RawExplain({HeaderMsg(h)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("layout.num_tokens: 2000 exceeds the server limit of 1024"));
  // A pass whose working memory exceeds max_memory_bytes (64 MiB): 12 per-layer
  // row-path matrices of 1024^2 floats.
  h.mutable_layout()->set_num_tokens(1024);
  h.mutable_layout()->set_num_layers(20);
  r = RawExplain({HeaderMsg(h)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("of the server's max_memory_bytes of 67108864"));
  // A message over max_message_bytes (1 MiB) is refused by gRPC itself.
  auto a = testing::UniformAttention(1, 1, 3, 300);  // 3 x 300^2 x 4 = 1.08 MB
  std::vector<v1::ExplainRequest> big = {HeaderMsg(testing::RolloutHeader(a)),
                                         LayerMsg(client::LayerChunks(ViewOf(a), 0, v1::DTYPE_FP32, 1 << 30)[0])};
  ASSERT_GT(big[1].ByteSizeLong(), 1u << 20);
  r = RawExplain(big);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  // Splitting by head range under the server's cap makes the same pass fit.
  client::ExplainOptions opts;
  opts.max_message_bytes = 1 << 20;
  auto ok = client_->Explain(testing::RolloutHeader(a), ViewOf(a), opts);
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST_F(ServerTest, DeadlineStopsAnIdlePassAndFreesItsMemory) {
  auto a = testing::UniformAttention(1, 3, 2, 64);
  auto msgs = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  v1::ExplainResponse response;
  auto writer = client_->stub()->Explain(&ctx, &response);
  ASSERT_TRUE(writer->Write(msgs[0]));
  ASSERT_TRUE(writer->Write(msgs[1]));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // past the deadline
  writer->Write(msgs[2]);
  grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The pass's reservation is released once the server sees the cancellation.
  ExpectMemoryReleased();
}

TEST_F(ServerTest, ClientCancellationFreesThePass) {
  auto a = testing::UniformAttention(1, 3, 2, 64);
  auto msgs = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext ctx;
  v1::ExplainResponse response;
  auto writer = client_->stub()->Explain(&ctx, &response);
  ASSERT_TRUE(writer->Write(msgs[0]));
  for (int i = 0; i < 100 && server_->memory_reserved() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GT(server_->memory_reserved(), 0);
  ctx.TryCancel();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectMemoryReleased();
}

// ExplainStream helpers.
v1::StreamRequest S(const std::string& id, const v1::ExplainRequest& m) {
  v1::StreamRequest r;
  r.set_request_id(id);
  if (m.has_header()) *r.mutable_header() = m.header();
  if (m.has_layer()) *r.mutable_layer() = m.layer();
  return r;
}
v1::StreamRequest End(const std::string& id) {
  v1::StreamRequest r;
  r.set_request_id(id);
  r.mutable_end();
  return r;
}

TEST_F(ServerTest, ExplainStreamMultiplexesAndReportsFailuresInBand) {
  auto a = testing::UniformAttention(1, 2, 2, 4);
  auto b = testing::UniformAttention(1, 3, 2, 8);
  auto ma = Pass(a, testing::RolloutHeader(a));
  auto mb = Pass(b, testing::RolloutHeader(b));
  auto bad = ma;
  reinterpret_cast<float*>(bad[1].mutable_layer()->mutable_attention()->mutable_data()->data())[0] = -1;

  grpc::ClientContext ctx;
  auto stream = client_->stub()->ExplainStream(&ctx);
  // Interleave: A header, B header, X header, A l0, X bad l0, B l0, A l1, X l1 (dropped),
  // B l1, B l2, A end, X end, B end.
  std::vector<v1::StreamRequest> msgs = {
      S("a", ma[0]), S("b", mb[0]), S("x", bad[0]), S("a", ma[1]), S("x", bad[1]),
      S("b", mb[1]), S("a", ma[2]), S("x", bad[2]), S("b", mb[2]), S("b", mb[3]),
      End("a"),      End("x"),      End("b"),      S("", ma[0]),  S("ghost", ma[1]),
      S(std::string(300, 'z'), ma[0])};
  std::thread writer([&] {
    for (auto& m : msgs) stream->Write(m);
    stream->WritesDone();
  });
  std::map<std::string, v1::StreamResponse> got;
  std::vector<std::string> order;
  v1::StreamResponse r;
  while (stream->Read(&r)) {
    order.push_back(r.request_id());
    got[r.request_id()] = r;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  // x fails at its bad layer, before a and b finish; its later messages are dropped.
  EXPECT_THAT(order, ::testing::ElementsAre("x", "a", "b", "", "ghost", std::string(256, 'z')));
  ASSERT_TRUE(got["a"].has_result());
  EXPECT_THAT(testing::MapValues(got["a"].result().results(0).maps(0)),
              Pointwise(FloatNear(1e-6), UniformRollout(4, 2, 0)));
  ASSERT_TRUE(got["b"].has_result());
  EXPECT_THAT(testing::MapValues(got["b"].result().results(0).maps(0)),
              Pointwise(FloatNear(1e-6), UniformRollout(8, 3, 0)));
  ASSERT_TRUE(got["x"].has_error());
  EXPECT_EQ(got["x"].error().code_name(), "INVALID_ARGUMENT");
  EXPECT_THAT(got["x"].error().message(), HasSubstr("expected probabilities >= 0"));
  EXPECT_THAT(got[""].error().message(), HasSubstr("request_id: expected a non-empty id"));
  EXPECT_THAT(got["ghost"].error().message(), HasSubstr("no open pass 'ghost'"));
  EXPECT_THAT(got[std::string(256, 'z')].error().message(),
              HasSubstr("request_id: expected at most 256 bytes, got 300"));
}

TEST_F(ServerTest, ExplainStreamLimitsOpenPassesAndAbandonsUnendedOnes) {
  auto a = testing::UniformAttention(1, 1, 1, 4);
  auto m = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext ctx;
  auto stream = client_->stub()->ExplainStream(&ctx);
  for (const char* id : {"p1", "p2", "p3", "p4"}) ASSERT_TRUE(stream->Write(S(id, m[0])));
  stream->WritesDone();
  std::map<std::string, v1::PassError> errors;
  v1::StreamResponse r;
  while (stream->Read(&r)) errors[r.request_id()] = r.error();
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_EQ(errors["p4"].code_name(), "RESOURCE_EXHAUSTED");
  EXPECT_THAT(errors["p4"].message(), HasSubstr("max_passes_per_stream is 3"));
  EXPECT_THAT(errors["p1"].message(), HasSubstr("closed before this pass's PassEnd"));
  ExpectMemoryReleased();
}

TEST_F(ServerTest, ShutdownRefusesNewPasses) {
  server_->Shutdown(absl::Milliseconds(200));
  auto info = client_->GetServerInfo(absl::Seconds(2));
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace attnroll::rpc
