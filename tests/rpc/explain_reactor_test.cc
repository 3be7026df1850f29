// The Explain RPC (explain_reactor): one pass per call, sent as raw messages
// or through the client library. Closed forms over every wire dtype, every bad
// input arriving over the wire, the variants' options, attention flow's
// deadline, encoder-decoder passes, random mutations, size limits, deadlines
// and cancellation.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/cpp/attnroll_client.h"
#include "server/session/pass.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::rpc {
namespace {

using ::testing::AllOf;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

using testing::ServerTest;
using testing::StatusIs;
using testing::UniformRollout;
using testing::ViewOf;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kExhausted = absl::StatusCode::kResourceExhausted;

TEST_F(ServerTest, ExplainUniformClosedFormOverEveryWireDtype) {
  // n = 8: 1/8 is exact in fp16 and bf16, so every wire gives the closed form.
  auto a = testing::UniformAttention(1, 4, 6, 8);
  for (v1::DType wire : {v1::DTYPE_FP32, v1::DTYPE_FP16, v1::DTYPE_BF16}) {
    v1::PassHeader h = testing::RolloutHeader(a);
    h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(5);
    client::ExplainOptions opts;
    opts.wire = wire;
    opts.client_fusion = client::ClientFusion::kOff;  // every head, split by head range
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

TEST_F(ServerTest, LayersOrTheWholePassInOneMessageGiveTheMapsOfLayerMessages) {
  std::mt19937 rng(7);
  auto a = testing::MakeAttention(1, 5, 3, 9, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(9, rng);
  });
  const v1::PassHeader h = testing::RolloutHeader(a);
  const std::vector<v1::ExplainRequest> single = Pass(a, h);  // header, layers 0..4
  ASSERT_EQ(single.size(), 6u);
  auto one = RawExplain(single);
  ASSERT_TRUE(one.ok()) << one.status();
  // Every layer in one batch; and batches of 2, 1 (a layer message between), 2.
  std::vector<v1::ExplainRequest> all = {single[0], v1::ExplainRequest()};
  for (int l = 1; l <= 5; ++l) *all[1].mutable_layers()->add_layers() = single[l].layer();
  std::vector<v1::ExplainRequest> mixed = {single[0], v1::ExplainRequest(), single[3], v1::ExplainRequest()};
  for (int l : {1, 2}) *mixed[1].mutable_layers()->add_layers() = single[l].layer();
  for (int l : {4, 5}) *mixed[3].mutable_layers()->add_layers() = single[l].layer();
  // And the whole pass in one message (the header with every layer).
  std::vector<v1::ExplainRequest> whole(1);
  *whole[0].mutable_whole_pass()->mutable_header() = h;
  for (int l = 1; l <= 5; ++l) *whole[0].mutable_whole_pass()->add_layers() = single[l].layer();
  for (const auto& msgs : {all, mixed, whole}) {
    auto r = RawExplain(msgs);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(testing::MapValues(r->results(0).maps(0)), testing::MapValues(one->results(0).maps(0)));
  }
}

TEST_F(ServerTest, BadInputsGetInvalidArgumentNamingTheField) {
  auto a = testing::UniformAttention(1, 2, 2, 4);
  const v1::PassHeader h = testing::RolloutHeader(a);
  const std::vector<v1::ExplainRequest> good = Pass(a, h);  // header, layer 0, layer 1
  ASSERT_EQ(good.size(), 3u);
  auto expect_invalid = [&](const std::vector<v1::ExplainRequest>& msgs, const std::string& needle) {
    EXPECT_THAT(RawExplain(msgs), StatusIs(kInvalid, HasSubstr(needle)));
  };
  expect_invalid({}, "header: expected a PassHeader as the first message");
  expect_invalid({good[1]}, "expected a PassHeader as the first message, got a layer");
  expect_invalid({good[0], good[0]}, "header: duplicate");
  expect_invalid({good[0], good[2]}, "layer: out of order: expected layer 0, got 1");
  expect_invalid({good[0], good[1], good[1]}, "layer: duplicate: layer 0");
  expect_invalid({good[0], good[1]}, "layer: missing: the stream ended after 1 complete layers");
  expect_invalid({good[0], v1::ExplainRequest()}, "message 2: expected a header, a layer, layers or a whole_pass, got none of them");

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

  // Layers in one message: each handled as if it came alone.
  auto batch = [&](std::vector<int> idx) {
    v1::ExplainRequest m;
    m.mutable_layers();  // set, even when empty
    for (int i : idx) *m.mutable_layers()->add_layers() = good[i].layer();
    return m;
  };
  expect_invalid({batch({1, 2})}, "header: expected a PassHeader as the first message, got layers");
  expect_invalid({good[0], batch({})}, "layers (message 2): expected at least one layer message, got none");
  expect_invalid({good[0], batch({2, 1})}, "layer: out of order: expected layer 0, got 1");
  expect_invalid({good[0], batch({1, 1})}, "layer: duplicate: layer 0");
  expect_invalid({good[0], batch({1})}, "layer: missing: the stream ended after 1 complete layers");
  {
    std::vector<v1::ExplainRequest> m = {good[0], batch({1, 2})};
    reinterpret_cast<float*>(m[1].mutable_layers()->mutable_layers(1)->mutable_attention()->mutable_data()->data())[20] =
        -0.25f;
    expect_invalid(m, "attention (layer 1, head 1, sequence 0, row 1): expected probabilities >= 0");
  }

  // The whole pass in one message: its layers handled as if they came alone.
  auto whole = [&](const v1::PassHeader& header, std::vector<int> idx) {
    v1::ExplainRequest m;
    *m.mutable_whole_pass()->mutable_header() = header;
    for (int i : idx) *m.mutable_whole_pass()->add_layers() = good[i].layer();
    return m;
  };
  expect_invalid({good[0], whole(h, {1, 2})},
                 "whole_pass (message 2): expected the only message of the call, got it after a header");
  expect_invalid({whole(h, {1, 2}), good[2]},
                 "message 2: expected the end of the call after a whole_pass, got another message");
  expect_invalid({whole(h, {2, 1})}, "layer: out of order: expected layer 0, got 1");
  expect_invalid({whole(h, {1})}, "layer: missing: the stream ended after 1 complete layers");
  expect_invalid({whole(h, {})}, "layer: missing: the stream ended after 0 complete layers");
  {
    std::vector<v1::ExplainRequest> m = {whole(h, {1, 2})};
    reinterpret_cast<float*>(m[0].mutable_whole_pass()->mutable_layers(1)->mutable_attention()->mutable_data()->data())[20] =
        -0.25f;
    expect_invalid(m, "attention (layer 1, head 1, sequence 0, row 1): expected probabilities >= 0");
  }
  bad = h;
  bad.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(4);
  expect_invalid({whole(bad, {1, 2})}, "readout.rows: row 4 out of range");

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

  EXPECT_THAT(client_->Explain(h, ViewOf(a)),
              StatusIs(kInvalid, HasSubstr("layer[0].gradient: expected a gradient")));
  EXPECT_THAT(client_->Explain(testing::RolloutHeader(a), view),
              StatusIs(kInvalid, HasSubstr("no analysis is gradient-weighted, but a gradient was sent")));
  std::vector<float> bad = ones;
  bad[5 * n * n + 3] = NAN;  // layer 1, head 1
  client::AttentionView nan_view = view;
  nan_view.gradient = bad.data();
  EXPECT_THAT(client_->Explain(h, nan_view),
              StatusIs(kInvalid, HasSubstr("gradient (layer 1, head 1, sequence 0, row 0): expected finite values")));
  v1::PassHeader bad_rule = h;
  bad_rule.mutable_analyses(0)->mutable_rollout()->mutable_gradient()->set_rule(
      static_cast<v1::GradientRule>(5));
  EXPECT_THAT(client_->Explain(bad_rule, view),
              StatusIs(kInvalid, HasSubstr("rollout.gradient.rule: expected CHEFER or VIT_EXPLAIN, got 5")));
  v1::PassHeader bad_prune = testing::RolloutHeader(a);
  bad_prune.mutable_analyses(0)->mutable_rollout()->mutable_pruning()->set_discard_ratio(1.0f);
  EXPECT_THAT(client_->Explain(bad_prune, ViewOf(a)),
              StatusIs(kInvalid, HasSubstr("pruning.discard_ratio: expected 0 <= ratio < 1, got 1")));

  // A gradient whose shape differs from the attention's.
  auto msgs = Pass(a, testing::RolloutHeader(a));
  msgs[0] = HeaderMsg(h);
  for (size_t i = 1; i < msgs.size(); ++i) {
    v1::Tensor* g = msgs[i].mutable_layer()->mutable_gradient();
    *g = msgs[i].layer().attention();
    g->set_shape(1, 2);
    g->mutable_data()->resize(g->data().size() / 2);
  }
  EXPECT_THAT(RawExplain(msgs),
              StatusIs(kInvalid, HasSubstr("layer[0].gradient.shape: expected the attention's shape "
                                           "[1, 4, 8, 8], got [1, 2, 8, 8]")));
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

  weights[3] = 1.5f;
  EXPECT_THAT(client_->Explain(h1, wview),
              StatusIs(kInvalid, HasSubstr("layer[0].residual_weights: expected weights in [0, 1], got 1.5 "
                                           "(sequence 0, token 3)")));
  std::vector<float> bad_norms = norms;
  bad_norms[7] = -1.0f;  // layer 0, head 1, token 2
  client::AttentionView nview = view;
  nview.value_norms = bad_norms.data();
  EXPECT_THAT(client_->Explain(h, nview),
              StatusIs(kInvalid, HasSubstr("layer[0].value_norms: expected finite norms >= 0, got -1 "
                                           "(sequence 0, head 1, token 2)")));

  // Raw messages: residual weights on a layer's second message; value norms on
  // the first message only; a wrong shape.
  auto msgs = Pass(a, testing::RolloutHeader(a));
  auto chunks = client::LayerChunks(view, 0, v1::DTYPE_FP32, 1024 + n * n * 4 + n * 4);
  ASSERT_EQ(chunks.size(), 2u);
  msgs[1] = LayerMsg(chunks[0]);  // layer 0 head 0 with value norms, then layers without
  auto res = RawExplain({msgs[0], msgs[1], LayerMsg(client::LayerChunks(ViewOf(a), 0, v1::DTYPE_FP32, 1024 + n * n * 4)[1])});
  EXPECT_THAT(res, StatusIs(kInvalid, HasSubstr("expected value norms (the pass's first message had them), got none")));
  v1::LayerChunk second = chunks[1];
  second.mutable_residual_weights()->set_dtype(v1::DTYPE_FP32);
  second.mutable_residual_weights()->add_shape(1);
  second.mutable_residual_weights()->set_data(std::string(4, '\0'));
  res = RawExplain({msgs[0], LayerMsg(chunks[0]), LayerMsg(second)});
  EXPECT_THAT(res, StatusIs(kInvalid, HasSubstr("residual_weights: expected on the layer's first message "
                                                 "(head_start 0), got head_start 1")));
  v1::LayerChunk wrong = chunks[0];
  wrong.mutable_value_norms()->set_shape(2, n - 1);
  wrong.mutable_value_norms()->mutable_data()->resize((n - 1) * 4);
  res = RawExplain({msgs[0], LayerMsg(wrong)});
  EXPECT_THAT(res, StatusIs(kInvalid, HasSubstr("layer[0].value_norms.shape: expected [1, 1, 5], got [1, 1, 4]")));
}

TEST_F(ServerTest, FlowStopsAtItsDeadlineBetweenMaxFlowsAndFreesItsMemory) {
  // The full 197 x 197 flow matrix of a ViT-sized pass takes seconds; a 300 ms
  // deadline must end it early, with DEADLINE_EXCEEDED, and free the pass.
  // Room for its solvers: with several output rows each worker's budget
  // includes the split certificate's (AttentionFlow::WorkingBytes).
  runtime::ServerConfig c = Config();
  c.max_memory_bytes = 256 << 20;
  StartServer(c);
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
  ExpectMemoryReleased(absl::Seconds(5));
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
  EXPECT_THAT(bad, StatusIs(kInvalid, HasSubstr("the RULES composition needs a gradient")));
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
  EXPECT_THAT(bad, StatusIs(kInvalid, HasSubstr("expected an encoder_decoder analysis (an encoder-decoder pass takes no other), got rollout")));
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
  EXPECT_THAT(RawExplain({HeaderMsg(h)}),
              StatusIs(kExhausted, HasSubstr("layout.num_tokens: 2000 exceeds the server limit of 1024")));
  // A pass whose working memory exceeds max_memory_bytes (64 MiB): 12 per-layer
  // row-path matrices of 1024^2 floats.
  h.mutable_layout()->set_num_tokens(1024);
  h.mutable_layout()->set_num_layers(20);
  EXPECT_THAT(RawExplain({HeaderMsg(h)}),
              StatusIs(kExhausted, HasSubstr("of the server's max_memory_bytes of 67108864")));
}

TEST_F(ServerTest, AWholePassCountsItsMessageAgainstTheMemoryBudget) {
  // The parsed message is held until the pass's layers are added: admission
  // counts it with the pass's working memory, a streamed pass has no such message.
  auto a = testing::UniformAttention(1, 2, 2, 160);  // 409,600 bytes of attention
  const v1::PassHeader h = testing::RolloutHeader(a);
  const std::vector<v1::ExplainRequest> streamed = Pass(a, h);
  v1::ExplainRequest whole;
  *whole.mutable_whole_pass()->mutable_header() = h;
  for (size_t i = 1; i < streamed.size(); ++i) *whole.mutable_whole_pass()->add_layers() = streamed[i].layer();
  const int64_t message = static_cast<int64_t>(whole.ByteSizeLong());
  auto plan = session::PlanFromHeader(h, Config().limits, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  runtime::ServerConfig c = Config();
  c.client_share = 1.0;  // the budget is the limit, not one client's share of it
  c.max_memory_bytes = plan->working_bytes() + message / 2;
  StartServer(c);
  auto r = RawExplain(streamed);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(RawExplain({whole}),
              StatusIs(kExhausted, AllOf(HasSubstr(absl::StrCat("needs ", plan->working_bytes() + message,
                                                                " bytes of working memory")),
                                         HasSubstr(absl::StrCat("max_memory_bytes of ", c.max_memory_bytes)))));
  c.max_memory_bytes = plan->working_bytes() + 2 * message;
  StartServer(c);
  auto w = RawExplain({whole});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(testing::MapValues(w->results(0).maps(0)), testing::MapValues(r->results(0).maps(0)));
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

}  // namespace
}  // namespace attnroll::rpc
