// The ExplainPair RPC (pair_reactor): one input under two models on one
// stream; both responses and the comparison of their maps come back.

#include <random>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cpp/attnroll_client.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::rpc {
namespace {

using ::testing::HasSubstr;

using testing::ServerTest;
using testing::StatusIs;
using testing::ViewOf;

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
  client::ExplainOptions every_head;  // so the server, not the client's fusion, finds it
  every_head.client_fusion = client::ClientFusion::kOff;
  EXPECT_THAT(client_->ExplainPair(h, v1::CompareOptions(), ViewOf(base), bad, every_head),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("candidate attention (layer 0")));
}

}  // namespace
}  // namespace attnroll::rpc
