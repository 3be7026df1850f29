// The Audit RPC (audit_reactor): items as maps or as attention passes, one
// in-band answer per item in any order, an order-independent report, bad
// items and a full worker queue answered in-band.

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/cpp/attnroll_client.h"
#include "tests/testutil/server_fixture.h"

namespace attnroll::rpc {
namespace {

using ::testing::HasSubstr;

using testing::ServerTest;
using testing::ViewOf;

// Audit helpers: an 8x8 map with its mass in the left (or right) half.
v1::Tensor HalfMap(std::mt19937& rng, bool right) {
  std::uniform_real_distribution<float> u(0.5f, 1.0f);
  std::vector<float> m(64, 0.0f);
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) {
      if ((c >= 4) == right) m[r * 8 + c] = u(rng);
    }
  }
  return testing::Fp32Tensor(m, {8, 8});
}

// Items "<prefix>0", "<prefix>1", ...: a baseline with its mass in the left
// half; for the first `shifted` items a candidate that moved it to the right
// half, for the others the baseline itself.
std::vector<v1::AuditItem> HalfMapItems(std::mt19937& rng, const std::string& prefix, int count,
                                        int shifted) {
  std::vector<v1::AuditItem> items;
  for (int i = 0; i < count; ++i) {
    v1::AuditItem& item = items.emplace_back();
    item.set_id(absl::StrCat(prefix, i));
    *item.mutable_baseline() = HalfMap(rng, false);
    *item.mutable_candidate() = i < shifted ? HalfMap(rng, true) : item.baseline();
  }
  return items;
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
  std::vector<float> mask(64);  // the region: the left half
  for (int i = 0; i < 64; ++i) mask[i] = (i % 8) < 4 ? 1.0f : 0.0f;
  *header.mutable_compare()->mutable_region() = testing::Fp32Tensor(mask, {64});
  header.mutable_thresholds()->set_max_emd(1.0);
  header.mutable_thresholds()->set_max_region_share_drop(0.5);
  // Items 0..15: the candidate moved its reliance to the right half; 16..23 did not.
  std::vector<v1::AuditItem> items = HalfMapItems(rng, "img", 24, 16);
  for (int i = 0; i < 24; ++i) items[i].set_group(i % 2 ? "night" : "day");
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
    // Item 1: pruning that empties every row (no entry reaches 0.99), so R = I
    // and the map without CLS has no mass: the item is refused, and its
    // passes' warnings come back with it.
    if (i == 1) h.mutable_analyses(0)->mutable_rollout()->mutable_pruning()->set_threshold(0.99f);
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
  EXPECT_EQ(items["item0"].warnings_size(), 0);
  EXPECT_TRUE(items["item1"].has_error());
  EXPECT_THAT(items["item1"].warnings(),
              ::testing::ElementsAre(HasSubstr("baseline: sequence 0: pruning emptied 20 rows"),
                                     HasSubstr("baseline: sequence 0: 1 of 1 maps have no mass"),
                                     HasSubstr("candidate: sequence 0: pruning emptied 20 rows"),
                                     HasSubstr("candidate: sequence 0: 1 of 1 maps have no mass")));
  EXPECT_EQ(items["item2"].drift_flags_size(), 1);
  EXPECT_GT(items["item2"].comparison().l1(), 0.0);
  EXPECT_THAT(items["broken"].error().message(), HasSubstr("candidate attention (layer 0"));
  EXPECT_EQ(report.overall().items(), 2);
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
  const std::vector<v1::AuditItem> items = HalfMapItems(rng, "i", 200, 200);
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

// A mergeable audit: the report carries its state (every item, sorted by id;
// the overall sums then one per group, 16 bytes per cell) and is otherwise the
// plain audit's report. A state over max_response_bytes ends the call with
// RESOURCE_EXHAUSTED naming the limit.
TEST_F(ServerTest, AMergeableAuditCarriesItsStateWithinTheResponseLimit) {
  std::mt19937 rng(5);
  v1::AuditHeader header;
  header.set_map_length(64);
  header.set_mergeable(true);
  header.mutable_thresholds()->set_max_l1(0.5);
  std::vector<v1::AuditItem> items = HalfMapItems(rng, "m", 30, 10);
  for (int i = 0; i < 30; ++i) items[i].set_group(i % 3 ? "b" : "a");
  AuditRun run = RunAudit(client_->stub(), header, items);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  const v1::AuditState& state = run.report.state();
  ASSERT_EQ(state.items_size(), 30);
  EXPECT_EQ(state.items(0).id(), "m0");
  EXPECT_EQ(state.items(1).id(), "m1");
  EXPECT_EQ(state.items(2).id(), "m10");  // byte-wise order
  EXPECT_EQ(state.items(0).values_size(), 14);
  EXPECT_EQ(state.map_length(), 64u);
  EXPECT_EQ(state.worst_items(), 10u);
  EXPECT_EQ(state.max_groups(), 256u);
  EXPECT_EQ(state.thresholds().max_l1(), 0.5);
  ASSERT_EQ(state.sums_size(), 3);
  EXPECT_EQ(state.sums(0).group(), "");
  EXPECT_EQ(state.sums(1).group(), "a");
  EXPECT_EQ(state.sums(0).baseline().size(), 64u * 16);

  // Without mergeable: no state, and the same report otherwise.
  v1::AuditHeader plain = header;
  plain.set_mergeable(false);
  AuditRun plain_run = RunAudit(client_->stub(), plain, items);
  ASSERT_TRUE(plain_run.status.ok());
  EXPECT_FALSE(plain_run.report.has_state());
  v1::AuditReport without = run.report;
  without.clear_state();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(without, plain_run.report));

  // Over the response limit.
  runtime::ServerConfig c = Config();
  c.limits.max_response_bytes = 4096;
  StartServer(c);
  AuditRun over = RunAudit(client_->stub(), header, items);
  EXPECT_EQ(over.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(over.status.error_message(),
              HasSubstr("report: the report with its mergeable state (header.mergeable) is "));
  EXPECT_THAT(over.status.error_message(),
              HasSubstr(" bytes, over the server's max_response_bytes of 4096; audit fewer items "
                        "per call (shards) or leave mergeable unset"));
  EXPECT_EQ(over.items.size(), 30u);
  ExpectMemoryReleased();
}

}  // namespace
}  // namespace attnroll::rpc
