// session::Monitor without gRPC: a time window on an injected clock (samples
// leave the window as time passes, with no traffic), group windows and their
// cap, maps of the wrong length or without mass counted, and the gauges'
// figures.
#include "server/session/monitor.h"

#include <vector>

#include <gtest/gtest.h>

#include "server/session/result_tensors.h"

namespace attnroll::session {
namespace {

v1::ExplainResponse Response(const std::vector<std::vector<float>>& maps) {
  v1::ExplainResponse r;
  v1::AnalysisResult* a = r.add_results();
  for (const std::vector<float>& m : maps) {
    FloatTensor(m.data(), m.size(), {2, 2}, a->add_maps());
  }
  return r;
}

v1::PassHeader Tagged(const std::string& group) {
  v1::PassHeader h;
  h.mutable_layout()->mutable_grid()->set_height(2);
  h.mutable_layout()->mutable_grid()->set_width(2);
  h.mutable_monitor()->set_model("m");
  h.mutable_monitor()->set_group(group);
  return h;
}

TEST(MonitorSessionTest, TimeWindowGroupsSkipsAndFigures) {
  runtime::ServerConfig c;
  c.monitor_models = {"m"};
  c.monitor_window_seconds = 30;  // 3 buckets of 10 s
  c.monitor_buckets = 3;
  c.monitor_max_groups = 1;
  double now = 1000;
  auto monitor = Monitor::Create(c, [&now] { return now; });
  ASSERT_TRUE(monitor.ok()) << monitor.status();
  auto fold = [&](const std::string& group, const std::vector<std::vector<float>>& maps) {
    v1::PassHeader h = Tagged(group);
    absl::StatusOr<std::optional<MonitorTicket>> t = (*monitor)->Admit(&h, true, "header");
    ASSERT_TRUE(t.ok() && t->has_value());
    v1::ExplainResponse r = Response(maps);
    (*monitor)->Fold(**t, &r);
    EXPECT_EQ(r.results_size(), 1);  // not monitor-only: the results stay
  };
  fold("day", {{1, 0, 0, 0}, {0, 1, 0, 0}});
  now = 1012;
  fold("night", {{0, 0, 1, 0}});   // a second group: over the cap of 1
  fold("day", {{0, 0, 0, 0}});     // no mass
  v1::ExplainResponse wrong;
  {
    v1::PassHeader h = Tagged("");
    auto t = (*monitor)->Admit(&h, true, "header");
    ASSERT_TRUE(t.ok());
    wrong.add_results()->add_maps();
    FloatTensor(std::vector<float>{1, 2, 3}.data(), 3, {3}, wrong.mutable_results(0)->mutable_maps(0));
    (*monitor)->Fold(**t, &wrong);
  }
  v1::MonitorRequest all;
  all.set_include_maps(true);
  absl::StatusOr<v1::MonitorResponse> s = (*monitor)->State(all);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->config().bucket_seconds(), 10);
  EXPECT_EQ(s->config().bucket_samples(), 0);
  const v1::ModelMonitor& m = s->models(0);
  EXPECT_EQ(m.passes(), 4);
  EXPECT_EQ(m.samples(), 3);
  EXPECT_EQ(m.skipped().no_mass(), 1);
  EXPECT_EQ(m.skipped().shape(), 1);
  EXPECT_EQ(m.skipped().group_overflow(), 1);
  ASSERT_EQ(m.windows_size(), 2);
  EXPECT_EQ(m.windows(0).live().samples(), 3);
  EXPECT_EQ(m.windows(1).group(), "day");
  EXPECT_EQ(m.windows(1).live().samples(), 2);
  // Mean map of (1,0,0,0), (0,1,0,0), (0,0,1,0).
  const v1::Tensor& mean = m.windows(0).live().mean_map();
  ASSERT_EQ(mean.shape_size(), 2);
  const float* v = reinterpret_cast<const float*>(mean.data().data());
  EXPECT_FLOAT_EQ(v[0], 1.0f / 3);
  EXPECT_FLOAT_EQ(v[2], 1.0f / 3);
  EXPECT_FLOAT_EQ(v[3], 0.0f);
  // Buckets 100 (t = 1000) and 101 (t = 1012) are in the window until bucket
  // 103 starts (t = 1030): then the first two samples are out; at 1060 all are.
  now = 1029.9;
  EXPECT_EQ((*monitor)->State(all)->models(0).windows(0).live().samples(), 3);
  now = 1031;
  EXPECT_EQ((*monitor)->State(all)->models(0).windows(0).live().samples(), 1);
  std::vector<runtime::MonitorFigures> f = (*monitor)->Figures();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].model, "m");
  EXPECT_EQ(f[0].window_samples, 1);
  EXPECT_EQ(f[0].folded, 3);
  EXPECT_FALSE(f[0].has_baseline);
  EXPECT_TRUE(f[0].drift.empty());  // no baseline: no drift gauge
  now = 1060;
  EXPECT_EQ((*monitor)->State(all)->models(0).windows(0).live().samples(), 0);
  EXPECT_EQ((*monitor)->Figures()[0].window_samples, 0);  // the cache follows the clock
}

TEST(MonitorSessionTest, AnUnsampledMonitorOnlyPassIsOnlyValidated) {
  runtime::ServerConfig c;
  c.monitor_models = {"m"};
  auto monitor = Monitor::Create(c);
  ASSERT_TRUE(monitor.ok());
  for (int i = 0; i < 4; ++i) {
    v1::PassHeader h = Tagged("");
    h.add_analyses()->mutable_rollout();
    h.mutable_monitor()->set_sample_one_in(2);
    h.mutable_monitor()->set_monitor_only(true);
    auto t = (*monitor)->Admit(&h, true, "header");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)->sampled, i % 2 == 0) << i;
    ASSERT_EQ(h.analyses_size(), 1);
    EXPECT_EQ(h.analyses(0).has_validate(), i % 2 == 1) << i;
    EXPECT_EQ(h.analyses(0).has_rollout(), i % 2 == 0) << i;
  }
}

}  // namespace
}  // namespace attnroll::session
