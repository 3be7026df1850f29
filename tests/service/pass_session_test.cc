// A pass's life without gRPC: layout and limit checks, message order, head
// ranges, and padding cropped before the math.
#include "server/service/pass_session.h"

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/attention_testutil.h"

namespace attnroll::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Pointwise;
using ::testing::FloatNear;

v1::PassHeader Header(int L, int H, int n, int B = 1) {
  v1::PassHeader h;
  h.set_request_id("p");
  h.mutable_layout()->set_num_layers(L);
  h.mutable_layout()->set_num_heads(H);
  h.mutable_layout()->set_num_tokens(n);
  h.mutable_layout()->set_batch_size(B);
  return h;
}

absl::Status CreateError(const v1::PassHeader& h, PassLimits limits = {}) {
  return PassSession::Create(h, limits).status();
}

TEST(PassSessionTest, LayoutAndLimitErrors) {
  EXPECT_THAT(std::string(CreateError(v1::PassHeader()).message()), HasSubstr("header.layout"));
  EXPECT_THAT(std::string(CreateError(Header(0, 1, 4)).message()),
              HasSubstr("layout.num_layers: expected 1 <= value"));
  PassLimits small;
  small.max_tokens = 16;
  absl::Status s = CreateError(Header(1, 1, 17), small);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("layout.num_tokens: 17 exceeds the server limit of 16"));
  small = PassLimits();
  small.max_pass_bytes = 1000;
  s = CreateError(Header(2, 2, 8), small);  // 2*2*64*2 = 512 bytes min: fits
  EXPECT_TRUE(s.ok()) << s;
  s = CreateError(Header(4, 2, 8), small);  // 1024 > 1000
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_pass_bytes of 1000"));

  v1::PassHeader h = Header(1, 1, 8, 2);
  h.mutable_layout()->add_valid_lengths(8);
  EXPECT_THAT(std::string(CreateError(h).message()), HasSubstr("layout.valid_lengths: expected 2 lengths"));
  h.mutable_layout()->add_valid_lengths(9);
  EXPECT_THAT(std::string(CreateError(h).message()),
              HasSubstr("layout.valid_lengths[1]: expected 1 <= length <= num_tokens = 8, got 9"));
  h = Header(1, 1, 8);
  h.mutable_layout()->set_prefix_tokens(1);
  h.mutable_layout()->mutable_grid()->set_height(2);
  h.mutable_layout()->mutable_grid()->set_width(3);
  EXPECT_THAT(std::string(CreateError(h).message()), HasSubstr("grid: 2x3 = 6 cells, expected valid length - prefix_tokens = 8 - 1 = 7"));
  h = Header(1, 2, 8);
  h.add_analyses()->mutable_rollout()->set_fusion(v1::HEAD_FUSION_WEIGHTED);
  EXPECT_THAT(std::string(CreateError(h).message()), HasSubstr("rollout.head_weights: expected 2 weights"));
  h = Header(1, 2, 8);
  h.add_analyses()->mutable_rollout()->set_fusion(static_cast<v1::HeadFusion>(42));
  EXPECT_THAT(std::string(CreateError(h).message()), HasSubstr("rollout.fusion: expected MEAN, MAX, MIN, WEIGHTED or NONE, got 42"));
  h = Header(1, 2, 8);
  h.add_analyses()->mutable_rollout()->mutable_readout()->add_rows(8);
  EXPECT_THAT(std::string(CreateError(h).message()), HasSubstr("readout.rows: row 8 out of range"));
}

TEST(PassSessionTest, OrderingErrors) {
  auto a = testing::UniformAttention(1, 3, 4, 5);
  auto session = *PassSession::Create(testing::RolloutHeader(a), PassLimits());
  // 1024 bytes of the cap are left for the message's other fields: 2 heads/message.
  auto chunks0 = client::LayerChunks(a.view(), 0, v1::DTYPE_FP32, 1024 + 2 * 25 * 4);
  auto chunks1 = client::LayerChunks(a.view(), 1, v1::DTYPE_FP32, 1024 + 2 * 25 * 4);
  auto chunks2 = client::LayerChunks(a.view(), 2, v1::DTYPE_FP32, 1024 + 4 * 25 * 4);
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
  auto session = *PassSession::Create(h, PassLimits());
  for (int l = 0; l < L; ++l) {
    for (auto& c : client::LayerChunks(a.view(), l, v1::DTYPE_FP32, 1 << 20)) {
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
  auto s2 = *PassSession::Create(h2, PassLimits());
  for (int l = 0; l < L; ++l) {
    for (auto& c : client::LayerChunks(alone.view(), l, v1::DTYPE_FP32, 1 << 20)) {
      ASSERT_TRUE(s2->AddChunk(c).ok());
    }
  }
  v1::ExplainResponse cropped = *s2->Finish();
  EXPECT_THAT(testing::MapValues(padded.results(0).maps(1)),
              Pointwise(FloatNear(1e-6), testing::MapValues(cropped.results(0).maps(0))));
}

}  // namespace
}  // namespace attnroll::service
