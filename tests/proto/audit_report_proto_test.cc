// The audit report and state as messages (proto/cpp/audit_report_proto.h):
// thresholds both ways, the state's 128-bit sums as 16 little-endian bytes, a
// state through its message merges to the same report, malformed states named.
#include "proto/cpp/audit_report_proto.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace attnroll::v1 {
namespace {

analysis::AuditOptions Options() {
  analysis::AuditOptions o;
  o.map_length = 3;
  o.thresholds.max_emd = 0.5;
  o.thresholds.min_ssim = -0.25;
  o.worst_items = 4;
  o.max_drifted_ids = 9;
  o.max_groups = 5;
  return o;
}

analysis::AuditItem Item(const std::string& id, const std::string& group, float shift) {
  analysis::AuditItem item;
  item.id = id;
  item.group = group;
  item.baseline = {1.0f, 2.0f, 1.0f};
  item.candidate = {1.0f, 2.0f - shift, 1.0f + shift};
  item.comparison.cosine = 1.0 - shift;
  item.comparison.l1 = shift;
  return item;
}

TEST(AuditReportProtoTest, ThresholdsGoBothWaysFieldByField) {
  DriftThresholds p;
  p.set_min_spearman(0.1);
  p.set_max_com_shift(2.5);
  p.set_max_region_share_drop(0);
  const analysis::DriftThresholds a = ToDriftThresholds(p);
  EXPECT_EQ(a.min_spearman, 0.1);
  EXPECT_EQ(a.max_com_shift, 2.5);
  EXPECT_EQ(a.max_region_share_drop, 0.0);
  EXPECT_FALSE(a.max_emd.has_value());
  EXPECT_FALSE(a.min_kendall_tau_b.has_value());
  const DriftThresholds back = FromDriftThresholds(a);
  EXPECT_EQ(back.SerializeAsString(), p.SerializeAsString());
}

TEST(AuditReportProtoTest, SumsAreSixteenLittleEndianBytesPerCell) {
  analysis::AuditState state;
  __extension__ const analysis::AuditFixed big = (static_cast<analysis::AuditFixed>(1) << 64) + 2;
  state.sums.push_back({"", {big, 0, 0x0102}, {0, 1, 0}});
  AuditState p;
  ToStateProto(state, Options(), &p);
  ASSERT_EQ(p.sums_size(), 1);
  const std::string& a = p.sums(0).baseline();
  ASSERT_EQ(a.size(), 48u);
  EXPECT_EQ(a[0], 2);
  EXPECT_EQ(a[8], 1);
  for (int b : {1, 2, 7, 9, 15}) EXPECT_EQ(a[b], 0) << b;
  EXPECT_EQ(a[32], 2);
  EXPECT_EQ(a[33], 1);
  EXPECT_EQ(p.map_length(), 3u);
  EXPECT_EQ(p.worst_items(), 4u);
  EXPECT_EQ(p.max_drifted_ids(), 9u);
  EXPECT_EQ(p.max_groups(), 5u);
  EXPECT_TRUE(p.group_mean_maps());
  EXPECT_EQ(p.thresholds().max_emd(), 0.5);
  absl::StatusOr<analysis::AuditState> back = FromStateProto(p);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->sums[0].a == state.sums[0].a);
  EXPECT_TRUE(back->sums[0].b == state.sums[0].b);
}

// Two shards through their messages give the report of one aggregator fed both.
TEST(AuditReportProtoTest, ShardStatesThroughMessagesMergeToTheWholeReport) {
  const analysis::AuditOptions o = Options();
  absl::StatusOr<analysis::AuditAggregator> whole = analysis::AuditAggregator::Create(o);
  absl::StatusOr<analysis::AuditAggregator> s0 = analysis::AuditAggregator::Create(o);
  absl::StatusOr<analysis::AuditAggregator> s1 = analysis::AuditAggregator::Create(o);
  ASSERT_TRUE(whole.ok() && s0.ok() && s1.ok());
  const char* groups[] = {"", "a", "b"};
  for (int i = 0; i < 9; ++i) {
    const analysis::AuditItem item = Item("item" + std::to_string(i), groups[i % 3], 0.1f * i);
    ASSERT_TRUE(whole->Add(item).ok());
    ASSERT_TRUE((i % 2 == 0 ? *s0 : *s1).Add(item).ok());
  }
  absl::StatusOr<analysis::AuditAggregator> merged = analysis::AuditAggregator::Create(o);
  ASSERT_TRUE(merged.ok());
  for (const analysis::AuditAggregator* shard : {&*s0, &*s1}) {
    AuditState p;
    ToStateProto(shard->ExportState(), o, &p);
    AuditState parsed;
    ASSERT_TRUE(parsed.ParseFromString(p.SerializeAsString()));
    // The options read back as given.
    const analysis::AuditOptions read = StateOptions(parsed);
    EXPECT_EQ(read.map_length, 3);
    EXPECT_EQ(read.max_groups, 5);
    EXPECT_EQ(read.thresholds.min_ssim, -0.25);
    absl::StatusOr<analysis::AuditState> state = FromStateProto(parsed);
    ASSERT_TRUE(state.ok()) << state.status();
    // NaN (undefined) survives the wire.
    EXPECT_TRUE(std::isnan(state->items[0].value[0]));
    ASSERT_TRUE(merged->MergeState(*state).ok());
  }
  AuditReport want, got;
  ToReportProto(whole->Finish(), &want);
  ToReportProto(merged->Finish(), &got);
  // Field for field, doubles exactly (map fields serialise in no fixed order).
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, want));
  EXPECT_EQ(got.overall().items(), 9);
  ASSERT_EQ(got.groups_size(), 2);
  EXPECT_EQ(got.groups(0).group(), "a");
  // l1 > max_emd is no flag (emd is undefined); cosine has no threshold.
  EXPECT_EQ(got.overall().drifted(), 0);
  EXPECT_EQ(got.overall().mean_baseline().shape(0), 3);
}

TEST(AuditReportProtoTest, MalformedStatesAreNamed) {
  AuditState p;
  p.set_map_length(3);
  absl::StatusOr<analysis::AuditState> s = FromStateProto(p);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message(),
            "state.sums: expected at least the whole audit's entry (group \"\"), got none");
  AuditStateSums* e = p.add_sums();
  e->set_baseline(std::string(48, '\0'));
  e->set_candidate(std::string(47, '\0'));
  s = FromStateProto(p);
  EXPECT_EQ(s.status().message(),
            "state.sums[0].candidate: expected 48 bytes (16 per cell of 3), got 47");
  e->set_candidate(std::string(48, '\0'));
  AuditStateItem* item = p.add_items();
  item->set_id("x");
  for (int m = 0; m < 13; ++m) item->add_values(0);
  s = FromStateProto(p);
  EXPECT_EQ(s.status().message(),
            "state.items[0].values: expected 14 values (one per metric), got 13");
  item->add_values(0);
  EXPECT_TRUE(FromStateProto(p).ok());
}

}  // namespace
}  // namespace attnroll::v1
