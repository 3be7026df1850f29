// Live monitoring over the RPCs (Monitor, PinBaseline, ListBaselines,
// RemoveBaseline, and the monitor tag of Explain / ExplainStream): the window
// holds the maps the passes returned, sampling and monitor-only passes, every
// bad input with its exact status, baselines kept across a restart, and a
// data dir that cannot be used or a corrupt file refused at start.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cpp/attnroll_client.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::rpc {
namespace {

using testing::ServerTest;
using testing::StatusIs;
using testing::ViewOf;

std::string TempDir() {
  char path[] = "/tmp/attnroll_monitor_XXXXXX";
  EXPECT_NE(mkdtemp(path), nullptr);
  return path;
}

class MonitorTest : public testing::ServerTest {
 protected:
  void SetUp() override {
    dir_ = TempDir();
    StartServer(MonitorConfig(dir_));
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    std::system(("rm -rf " + dir_).c_str());
  }
  static runtime::ServerConfig MonitorConfig(const std::string& dir) {
    runtime::ServerConfig c = Config();
    c.data_dir = dir;
    c.monitor_models = {"a", "b"};
    c.monitor_window_samples = 8;
    c.monitor_buckets = 2;
    c.monitor_max_groups = 1;
    return c;
  }

  // A pass of 5 tokens (CLS + a 2x2 grid), batch 2, tagged with `model`.
  v1::PassHeader Header(const testing::Attention& a, const std::string& model, uint32_t every = 0,
                        bool only = false, const std::string& group = "") {
    v1::PassHeader h = testing::RolloutHeader(a);
    h.mutable_layout()->set_prefix_tokens(1);
    h.mutable_layout()->mutable_grid()->set_height(2);
    h.mutable_layout()->mutable_grid()->set_width(2);
    if (!model.empty()) {
      h.mutable_monitor()->set_model(model);
      h.mutable_monitor()->set_sample_one_in(every);
      h.mutable_monitor()->set_monitor_only(only);
      h.mutable_monitor()->set_group(group);
    }
    return h;
  }
  testing::Attention Random(uint32_t seed) {
    std::mt19937 rng(seed);
    return testing::MakeAttention(2, 2, 2, 5, [&](int64_t, int64_t, int64_t) {
      return testing::RandomStochastic(5, rng, 2.0f);
    });
  }
  v1::ModelMonitor State(const std::string& model) {
    v1::MonitorRequest r;
    r.set_model(model);
    r.set_include_maps(true);
    auto s = client_->Monitor(r);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->models(0) : v1::ModelMonitor();
  }
  v1::PinBaselineRequest Live(const std::string& name, const std::string& model) {
    v1::PinBaselineRequest r;
    r.set_name(name);
    r.set_model(model);
    r.mutable_live();
    return r;
  }
  std::string dir_;
};

TEST_F(MonitorTest, TheWindowHoldsTheMapsThePassesReturned) {
  std::vector<double> mean(4, 0.0);
  int samples = 0;
  for (uint32_t p = 0; p < 3; ++p) {
    const testing::Attention a = Random(p);
    auto r = client_->Explain(Header(a, "a", 0, false, "day"), ViewOf(a));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->results(0).maps_size(), 2);
    for (const v1::Tensor& t : r->results(0).maps()) {
      const std::vector<float> m = testing::MapValues(t);
      double s = 0;
      for (float v : m) s += v;
      for (int i = 0; i < 4; ++i) mean[i] += m[i] / s;
      ++samples;
    }
  }
  const v1::ModelMonitor m = State("a");
  EXPECT_EQ(m.model(), "a");
  EXPECT_EQ(m.passes(), 3);
  EXPECT_EQ(m.sampled_passes(), 3);
  EXPECT_EQ(m.samples(), 6);
  EXPECT_EQ(m.map_length(), 4u);
  EXPECT_EQ(m.grid_height(), 2u);
  ASSERT_EQ(m.windows_size(), 2);  // the model's window, group "day"
  EXPECT_EQ(m.windows(0).group(), "");
  EXPECT_EQ(m.windows(1).group(), "day");
  EXPECT_EQ(m.windows(0).live().samples(), 6);
  const std::vector<float> got = testing::MapValues(m.windows(0).live().mean_map());
  ASSERT_EQ(got.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(got[i], mean[i] / samples, 1e-7) << i;
  // No baseline: every drift number undefined, saying so.
  ASSERT_EQ(m.windows(0).drift_size(), 10);
  EXPECT_FALSE(m.windows(0).drift(0).defined());
  EXPECT_EQ(m.windows(0).drift(0).note(), "no baseline is pinned for this model");
  // Model b saw nothing.
  const v1::ModelMonitor b = State("b");
  EXPECT_EQ(b.passes(), 0);
  EXPECT_EQ(b.windows_size(), 0);
}

TEST_F(MonitorTest, MeanMapsOverTheResponseLimitAreRefused) {
  runtime::ServerConfig c = MonitorConfig(dir_);
  c.limits.max_response_bytes = 40;
  StartServer(c);
  const testing::Attention a = Random(2);
  ASSERT_TRUE(client_->Explain(Header(a, "a", 0, false, "day"), ViewOf(a)).ok());
  v1::MonitorRequest r;
  r.set_model("a");
  r.set_include_maps(true);
  // Two fp32 maps of 4 values for the model's window and for group "day".
  EXPECT_THAT(client_->Monitor(r).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "include_maps: the mean maps take 64 bytes, the server's --max-response-bytes is "
                       "40; ask for one model"));
  r.set_include_maps(false);
  EXPECT_TRUE(client_->Monitor(r).ok());
}

TEST_F(MonitorTest, SamplingAndMonitorOnlyPasses) {
  const testing::Attention a = Random(7);
  for (int p = 0; p < 9; ++p) {
    auto r = client_->Explain(Header(a, "b", 3, /*only=*/true), ViewOf(a));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->results_size(), 0);  // monitor-only: no maps come back
  }
  const v1::ModelMonitor m = State("b");
  EXPECT_EQ(m.passes(), 9);
  EXPECT_EQ(m.sampled_passes(), 3);  // passes 0, 3, 6
  EXPECT_EQ(m.samples(), 6);         // two sequences each
  // ExplainStream passes are monitored too.
  auto stream = client_->ExplainStream();
  ASSERT_TRUE(stream->AddPass("s1", Header(a, "b"), ViewOf(a)).ok());
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_EQ(State("b").samples(), 8);
}

TEST_F(MonitorTest, BadTagsAreRefusedNamingTheField) {
  const testing::Attention a = Random(1);
  EXPECT_THAT(client_->Explain(Header(a, "x"), ViewOf(a)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "header.monitor.model: expected one of the server's --monitor-models (a, b), got \"x\""));
  EXPECT_THAT(client_->Explain(Header(a, "a", 2000000), ViewOf(a)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "header.monitor.sample_one_in: expected 0 to 1000000, got 2000000"));
  EXPECT_THAT(client_->Explain(Header(a, "a", 0, false, "no spaces"), ViewOf(a)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "header.monitor.group: expected at most 64 characters of [A-Za-z0-9_.:-], got "
                       "\"no spaces\" (9 bytes)"));
  v1::PassHeader empty = Header(a, "a");
  empty.mutable_monitor()->clear_model();
  EXPECT_THAT(client_->Explain(empty, ViewOf(a)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "header.monitor.model: expected one of the server's --monitor-models (a, b), got \"\""));
  EXPECT_THAT(client_->ExplainPair(Header(a, "a"), v1::CompareOptions(), ViewOf(a), ViewOf(a)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "header.monitor: expected unset (only Explain and ExplainStream passes are "
                       "monitored), got model \"a\""));
  v1::MonitorRequest unknown;
  unknown.set_model("zz");
  EXPECT_THAT(client_->Monitor(unknown).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "model: expected one of the server's --monitor-models (a, b), got \"zz\""));
  // Nothing was counted for the refused passes.
  EXPECT_EQ(State("a").passes(), 0);
}

TEST_F(MonitorTest, BaselinePinListRemoveAndTheirErrors) {
  // Live with no sample yet.
  EXPECT_THAT(client_->PinBaseline(Live("base-a", "a")).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "live: model \"a\"'s live window has no sample yet"));
  const testing::Attention a = Random(3);
  ASSERT_TRUE(client_->Explain(Header(a, "a"), ViewOf(a)).ok());
  // Invalid names.
  for (const std::string& bad : {std::string(""), std::string("../x"), std::string("-x"), std::string(65, 'n')}) {
    auto r = client_->PinBaseline(Live(bad, "a"));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(r.status().message()),
                ::testing::StartsWith("name: expected 1 to 64 characters of [A-Za-z0-9_.-] starting with a "
                                      "letter or digit, got \""));
  }
  EXPECT_THAT(client_->PinBaseline(Live("ok", "x")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "model: expected one of the server's --monitor-models (a, b), got \"x\""));
  v1::PinBaselineRequest none = Live("ok", "a");
  none.clear_live();
  EXPECT_THAT(client_->PinBaseline(none).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "source: expected audit or live, got neither"));
  v1::PinBaselineRequest region = Live("ok", "a");
  *region.mutable_region() = testing::Fp32Tensor({1, 0, 1}, {3});
  EXPECT_THAT(client_->PinBaseline(region).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "region: expected 4 values (the baseline's map length), got 3"));
  v1::PinBaselineRequest bad_name = Live("ok", "a");
  *bad_name.mutable_region() = testing::Fp32Tensor({1, 0, 1, 0}, {4});
  bad_name.set_region_name("Left Half");
  EXPECT_THAT(client_->PinBaseline(bad_name).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "region_name: expected 1 to 32 characters of [a-z0-9_], got \"Left Half\""));
  // A good one, with a region.
  v1::PinBaselineRequest good = Live("base-a", "a");
  *good.mutable_region() = testing::Fp32Tensor({1, 0, 1, 0}, {2, 2});
  good.set_region_name("left");
  auto pinned = client_->PinBaseline(good);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_EQ(pinned->path(), dir_ + "/baselines/base-a.baseline");
  EXPECT_EQ(pinned->baseline().samples(), 2);
  EXPECT_EQ(pinned->baseline().region_name(), "left");
  // Duplicate name, second baseline for the model, unknown removal.
  EXPECT_THAT(client_->PinBaseline(Live("base-a", "b")).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, "name: a baseline \"base-a\" already exists"));
  EXPECT_THAT(client_->PinBaseline(Live("other", "a")).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "model: \"a\" already has baseline \"base-a\"; remove it first (one baseline per model)"));
  EXPECT_THAT(client_->RemoveBaseline("nope").status(),
              StatusIs(absl::StatusCode::kNotFound, "name: no baseline \"nope\""));
  EXPECT_THAT(client_->RemoveBaseline("../etc").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "name: expected 1 to 64 characters of [A-Za-z0-9_.-] starting with a letter or "
                       "digit, got \"../etc\""));
  // Compared now: the same traffic as the baseline's has zero drift.
  const v1::ModelMonitor m = State("a");
  EXPECT_EQ(m.baseline(), "base-a");
  EXPECT_EQ(m.region_name(), "left");
  EXPECT_EQ(m.windows(0).reference(), "overall");
  for (const v1::DriftNumber& d : m.windows(0).drift()) {
    if (d.metric() == "js_divergence" || d.metric() == "emd" || d.metric() == "l1") {
      EXPECT_TRUE(d.defined()) << d.metric() << ": " << d.note();
      EXPECT_NEAR(d.value(), 0.0, 1e-12) << d.metric();
    }
  }
  auto list = client_->ListBaselines();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->baselines_size(), 1);
  EXPECT_EQ(list->baselines(0).name(), "base-a");
  EXPECT_EQ(list->baselines(0).model(), "a");
  EXPECT_EQ(list->baselines(0).source(), v1::BASELINE_SOURCE_LIVE);
  ASSERT_TRUE(client_->RemoveBaseline("base-a").ok());
  EXPECT_EQ(access((dir_ + "/baselines/base-a.baseline").c_str(), F_OK), -1);
  EXPECT_EQ(client_->ListBaselines()->baselines_size(), 0);
  EXPECT_EQ(State("a").baseline(), "");
}

TEST_F(MonitorTest, BaselinesFromAnAuditReport) {
  v1::PinBaselineRequest r;
  r.set_name("from-audit");
  r.set_model("b");
  v1::AuditReport* report = r.mutable_audit()->mutable_report();
  EXPECT_THAT(client_->PinBaseline(r).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "audit.report.overall: expected items with mean maps, got 0 items"));
  report->set_grid_height(2);
  report->set_grid_width(2);
  report->mutable_overall()->set_items(5);
  *report->mutable_overall()->mutable_mean_baseline() = testing::Fp32Tensor({0.4f, 0.1f, 0.4f, 0.1f}, {2, 2});
  *report->mutable_overall()->mutable_mean_candidate() = testing::Fp32Tensor({0.1f, 0.4f, 0.1f, 0.4f}, {2, 2});
  r.mutable_audit()->set_side(v1::AUDIT_SIDE_CANDIDATE);
  auto pinned = client_->PinBaseline(r);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_EQ(pinned->baseline().source(), v1::BASELINE_SOURCE_AUDIT_REPORT);
  EXPECT_EQ(pinned->baseline().samples(), 5);
  EXPECT_EQ(pinned->baseline().grid_height(), 2u);
  // Live traffic of another length is skipped, counted.
  const testing::Attention a = testing::UniformAttention(1, 1, 1, 7);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_monitor()->set_model("b");
  ASSERT_TRUE(client_->Explain(h, ViewOf(a)).ok());
  const v1::ModelMonitor m = State("b");
  EXPECT_EQ(m.skipped().shape(), 1);
  EXPECT_EQ(m.samples(), 0);
  EXPECT_EQ(m.map_length(), 4u);
  // A report of another length than the model's window.
  v1::PinBaselineRequest other = r;
  other.set_name("x2");
  other.set_model("b");
  ASSERT_TRUE(client_->RemoveBaseline("from-audit").ok());
  other.mutable_audit()->mutable_report()->set_grid_height(0);
  other.mutable_audit()->mutable_report()->set_grid_width(0);
  *other.mutable_audit()->mutable_report()->mutable_overall()->mutable_mean_candidate() =
      testing::Fp32Tensor({0.5f, 0.5f}, {2});
  EXPECT_THAT(client_->PinBaseline(other).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "audit.report: its maps have 2 values, the live window of model \"b\" has maps of 4"));
}

TEST_F(MonitorTest, BaselinesSurviveARestartAndCorruptFilesStopTheStart) {
  const testing::Attention a = Random(5);
  ASSERT_TRUE(client_->Explain(Header(a, "a"), ViewOf(a)).ok());
  ASSERT_TRUE(client_->PinBaseline(Live("kept", "a")).ok());
  StartServer(MonitorConfig(dir_));  // a new server on the same data dir
  auto list = client_->ListBaselines();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->baselines_size(), 1);
  EXPECT_EQ(list->baselines(0).name(), "kept");
  EXPECT_EQ(State("a").baseline(), "kept");
  client_.reset();
  server_.reset();
  // A leftover temporary file (a crash mid-write) is removed at start.
  const std::string base = dir_ + "/baselines/";
  { std::ofstream(base + "half.baseline.tmp") << "partial"; }
  StartServer(MonitorConfig(dir_));
  EXPECT_EQ(access((base + "half.baseline.tmp").c_str(), F_OK), -1);
  client_.reset();
  server_.reset();
  // A corrupt file: the start fails naming it.
  { std::ofstream(base + "bad.baseline") << "not a protobuf \xff\xff\xff"; }
  auto s = rpc::Server::Start(MonitorConfig(dir_));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.status().message(),
            base + "bad.baseline: corrupt: 18 bytes that do not parse as an attnroll BaselineFile");
  // A file renamed by hand: its content names another baseline.
  std::remove((base + "bad.baseline").c_str());
  std::rename((base + "kept.baseline").c_str(), (base + "moved.baseline").c_str());
  s = rpc::Server::Start(MonitorConfig(dir_));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.status().message(),
            base + "moved.baseline: holds baseline \"kept\", expected \"moved\" (its file name)");
  // A data dir that is a file, and one below a file.
  const std::string file = dir_ + "/plain-file";
  { std::ofstream(file) << "x"; }
  s = rpc::Server::Start(MonitorConfig(file));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.status().message(), "--data-dir: " + file + " is not a directory");
  s = rpc::Server::Start(MonitorConfig(file + "/sub"));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.status().message(), "--data-dir: cannot create " + file + "/sub: Not a directory");
  // A directory nobody may write in, root included (sysfs refuses mkdir).
  s = rpc::Server::Start(MonitorConfig("/sys"));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()), ::testing::StartsWith("--data-dir: cannot create /sys/baselines: "));
  StartServer(MonitorConfig(dir_ + "/fresh"));  // so TearDown has a server
}

TEST_F(ServerTest, WithoutDataDirOrModelsMonitoringIsRefused) {
  // The fixture's server: no --data-dir, no --monitor-models.
  v1::MonitorRequest r;
  EXPECT_THAT(client_->Monitor(r).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "the server monitors no model (start it with --monitor-models)"));
  EXPECT_THAT(client_->ListBaselines().status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "--data-dir: not set: the server stores no baselines (start it with --data-dir)"));
  runtime::ServerConfig c = Config();
  c.monitor_models = {"m"};
  StartServer(c);
  v1::PinBaselineRequest p;
  p.set_name("n");
  p.set_model("m");
  p.mutable_live();
  EXPECT_THAT(client_->PinBaseline(p).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "--data-dir: not set: the server stores no baselines (start it with --data-dir)"));
  const testing::Attention a = testing::UniformAttention(1, 1, 1, 4);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_monitor()->set_model("m");
  EXPECT_TRUE(client_->Explain(h, ViewOf(a)).ok());
}

}  // namespace
}  // namespace attnroll::rpc
