#include "server/session/monitor.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/runtime/refusal.h"
#include "server/session/attention_decode.h"
#include "server/session/result_tensors.h"

namespace attnroll::session {
namespace {

constexpr uint32_t kMaxSampleOneIn = 1000000;
constexpr size_t kMaxGroupBytes = 64;

using analysis::kHistogramBins;
using analysis::kNumSampleMetrics;
using analysis::SampleMetric;
using Histograms = std::array<std::array<int64_t, kHistogramBins>, kNumSampleMetrics>;

std::string Quoted(const std::string& s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

bool ValidGroup(const std::string& g) {
  if (g.size() > kMaxGroupBytes) return false;
  return std::all_of(g.begin(), g.end(), [](char ch) {
    return absl::ascii_isalnum(ch) || ch == '_' || ch == '.' || ch == ':' || ch == '-';
  });
}

bool ValidRegionName(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return absl::ascii_islower(ch) || absl::ascii_isdigit(ch) || ch == '_';
  });
}

std::vector<uint8_t> MaskOf(const v1::Tensor& t) {
  std::vector<uint8_t> mask;
  for (float v : DecodeAllValues(t)) mask.push_back(v != 0 ? 1 : 0);
  return mask;
}

v1::Tensor MapTensor(const std::vector<float>& values, int grid_h, int grid_w) {
  v1::Tensor t;
  FloatTensor(values.data(), values.size(),
              grid_h > 0 ? std::vector<int64_t>{grid_h, grid_w}
                         : std::vector<int64_t>{static_cast<int64_t>(values.size())},
              &t);
  return t;
}

// A window's summary as the API's statistics.
v1::SampleStats ToStats(const std::string& label, const analysis::WindowSummary& s, int grid_h,
                        int grid_w, bool with_map) {
  v1::SampleStats out;
  out.set_group(label);
  out.set_samples(s.samples);
  if (with_map && !s.mean_map.empty()) *out.mutable_mean_map() = MapTensor(s.mean_map, grid_h, grid_w);
  for (int m = 0; m < kNumSampleMetrics; ++m) {
    const analysis::ScalarSummary& x = s.scalars[m];
    if (x.count == 0) continue;
    v1::ScalarStats& o = (*out.mutable_scalars())[analysis::SampleMetricName(static_cast<SampleMetric>(m))];
    o.set_count(x.count);
    o.set_mean(x.mean);
    o.set_p10(x.p10);
    o.set_p50(x.p50);
    o.set_p90(x.p90);
    for (int64_t c : x.histogram) o.mutable_histogram()->add_counts(c);
  }
  return out;
}

// The baseline statistics' histograms (absent statistics: all zero); false
// when the statistics carry no distribution at all (audit baselines).
bool HistogramsOf(const v1::SampleStats& s, Histograms* out) {
  *out = {};
  if (s.scalars().empty()) return false;
  for (int m = 0; m < kNumSampleMetrics; ++m) {
    auto it = s.scalars().find(analysis::SampleMetricName(static_cast<SampleMetric>(m)));
    if (it == s.scalars().end()) continue;
    const auto& counts = it->second.histogram().counts();
    for (int b = 0; b < kHistogramBins && b < counts.size(); ++b) (*out)[m][b] = counts[b];
  }
  return true;
}

std::string RefusedNoModels() { return "the server monitors no model (start it with --monitor-models)"; }

}  // namespace

struct Monitor::Model {
  std::string name;
  std::atomic<int64_t> passes{0}, sampled{0};
  absl::Mutex mu;
  int map_length ABSL_GUARDED_BY(mu) = 0;
  int grid_h ABSL_GUARDED_BY(mu) = 0, grid_w ABSL_GUARDED_BY(mu) = 0;
  std::unique_ptr<analysis::MonitorWindow> window ABSL_GUARDED_BY(mu);
  struct Group {
    std::string label;
    std::unique_ptr<analysis::MonitorWindow> window;
  };
  std::vector<Group> groups ABSL_GUARDED_BY(mu);
  std::vector<uint8_t> region ABSL_GUARDED_BY(mu);
  std::shared_ptr<const v1::Baseline> baseline ABSL_GUARDED_BY(mu);
  int64_t folded ABSL_GUARDED_BY(mu) = 0, skipped_shape ABSL_GUARDED_BY(mu) = 0;
  int64_t skipped_no_mass ABSL_GUARDED_BY(mu) = 0, group_overflow ABSL_GUARDED_BY(mu) = 0;
  uint64_t version ABSL_GUARDED_BY(mu) = 0;
  // The gauges' cache: valid for (version, time bucket).
  absl::Mutex cache_mu;
  bool cached ABSL_GUARDED_BY(cache_mu) = false;
  uint64_t cached_version ABSL_GUARDED_BY(cache_mu) = 0;
  int64_t cached_bucket ABSL_GUARDED_BY(cache_mu) = 0;
  runtime::MonitorFigures figures ABSL_GUARDED_BY(cache_mu);
};

// A model's state, copied under its lock.
struct Monitor::Snapshot {
  int map_length = 0, grid_h = 0, grid_w = 0;
  analysis::WindowSums overall;
  std::vector<std::pair<std::string, analysis::WindowSums>> groups;  // sorted by label
  std::vector<uint8_t> region;
  std::shared_ptr<const v1::Baseline> baseline;
  int64_t folded = 0, skipped_shape = 0, skipped_no_mass = 0, group_overflow = 0;
  uint64_t version = 0;
};

namespace {

// One set of live samples against the baseline's statistics for its label.
v1::WindowDrift DriftOf(const std::string& label, const analysis::WindowSums& sums,
                        const std::shared_ptr<const v1::Baseline>& baseline, int grid_h, int grid_w,
                        bool with_maps, analysis::Drift* drift_out = nullptr) {
  v1::WindowDrift out;
  out.set_group(label);
  const analysis::WindowSummary live = analysis::Summarise(sums);
  *out.mutable_live() = ToStats(label, live, grid_h, grid_w, with_maps);
  analysis::Drift drift;
  if (baseline == nullptr) {
    for (auto& v : drift.values) v.note = "no baseline is pinned for this model";
  } else {
    const v1::SampleStats* ref = &baseline->overall();
    out.set_reference("overall");
    if (!label.empty()) {
      for (const v1::SampleStats& g : baseline->groups()) {
        if (g.group() == label) {
          ref = &g;
          out.set_reference("group");
        }
      }
    }
    *out.mutable_baseline() = *ref;
    if (!with_maps) out.mutable_baseline()->clear_mean_map();
    const std::vector<float> mean = DecodeAllValues(ref->mean_map());
    Histograms h;
    analysis::BaselineView view;
    view.mean_map = mean;
    if (HistogramsOf(*ref, &h)) view.histograms = &h;
    analysis::DriftSpec spec;
    spec.grid_h = static_cast<int>(baseline->grid_height());
    spec.grid_w = static_cast<int>(baseline->grid_width());
    if (baseline->has_region()) spec.region = MaskOf(baseline->region());
    absl::StatusOr<analysis::Drift> d = analysis::ComputeDrift(view, live, spec);
    if (d.ok()) {
      drift = *std::move(d);
    } else {
      for (auto& v : drift.values) v.note = std::string(d.status().message());
    }
  }
  for (int m = 0; m < analysis::kNumDriftMetrics; ++m) {
    v1::DriftNumber* n = out.add_drift();
    n->set_metric(analysis::DriftMetricName(static_cast<analysis::DriftMetric>(m)));
    n->set_defined(drift.values[m].value.has_value());
    n->set_value(drift.values[m].value.value_or(0.0));
    n->set_note(drift.values[m].note);
  }
  if (drift_out != nullptr) *drift_out = std::move(drift);
  return out;
}

}  // namespace

Monitor::Monitor(const runtime::ServerConfig& config, std::function<double()> clock)
    : config_(config), clock_(std::move(clock)) {
  for (const std::string& name : config_.monitor_models) {
    models_.push_back(std::make_unique<Model>());
    models_.back()->name = name;
  }
}

Monitor::~Monitor() = default;

absl::StatusOr<std::unique_ptr<Monitor>> Monitor::Create(const runtime::ServerConfig& config,
                                                         std::function<double()> clock) {
  if (!clock) clock = [] { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); };
  std::unique_ptr<Monitor> m(new Monitor(config, std::move(clock)));
  if (!config.data_dir.empty()) {
    absl::StatusOr<std::unique_ptr<BaselineStore>> store = BaselineStore::Open(config.data_dir);
    if (!store.ok()) return store.status();
    absl::MutexLock lock(&m->baselines_mu_);
    m->store_ = *std::move(store);
    for (const auto& [name, b] : m->store_->baselines()) {
      for (auto& model : m->models_) {
        if (model->name != b.model()) continue;
        bool has;
        {
          absl::MutexLock l(&model->mu);
          has = model->baseline != nullptr;
        }
        if (!has) m->Use(*model, std::make_shared<const v1::Baseline>(b));
      }
    }
  }
  return m;
}

analysis::WindowOptions Monitor::WindowOptionsFor(int map_length) const {
  analysis::WindowOptions o;
  o.map_length = map_length;
  o.buckets = config_.monitor_buckets;
  if (config_.monitor_window_seconds > 0) {
    o.bucket_seconds = config_.monitor_window_seconds / config_.monitor_buckets;
  } else {
    o.bucket_samples = (config_.monitor_window_samples + config_.monitor_buckets - 1) / config_.monitor_buckets;
  }
  return o;
}

absl::StatusOr<int> Monitor::ModelIndex(const std::string& name, const std::string& field) const {
  for (size_t i = 0; i < models_.size(); ++i) {
    if (models_[i]->name == name) return static_cast<int>(i);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": expected one of the server's --monitor-models (",
      models_.empty() ? "none are set" : absl::StrJoin(config_.monitor_models, ", "), "), got ",
      Quoted(name)));
}

absl::StatusOr<std::optional<MonitorTicket>> Monitor::Admit(v1::PassHeader* header, bool allowed,
                                                            const std::string& field) {
  if (!header->has_monitor()) return std::optional<MonitorTicket>();
  const v1::MonitorTag& tag = header->monitor();
  if (!allowed) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".monitor: expected unset (only Explain and ExplainStream passes are monitored), got model ",
        Quoted(tag.model())));
  }
  absl::StatusOr<int> index = ModelIndex(tag.model(), field + ".monitor.model");
  if (!index.ok()) return index.status();
  if (!ValidGroup(tag.group())) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".monitor.group: expected at most ", kMaxGroupBytes,
        " characters of [A-Za-z0-9_.:-], got ", Quoted(tag.group().substr(0, 80)),
        tag.group().size() > 80 ? "..." : "", " (", tag.group().size(), " bytes)"));
  }
  if (tag.sample_one_in() > kMaxSampleOneIn) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".monitor.sample_one_in: expected 0 to ",
                                                   kMaxSampleOneIn, ", got ", tag.sample_one_in()));
  }
  Model& m = *models_[*index];
  const int64_t every = std::max<uint32_t>(1, tag.sample_one_in());
  MonitorTicket t;
  t.model = *index;
  t.group = tag.group();
  t.monitor_only = tag.monitor_only();
  t.sampled = m.passes.fetch_add(1) % every == 0;
  if (t.sampled) m.sampled.fetch_add(1);
  t.grid_h = static_cast<int>(header->layout().grid().height());
  t.grid_w = static_cast<int>(header->layout().grid().width());
  if (t.monitor_only && !t.sampled && !header->layout().has_encoder_decoder()) {
    header->clear_analyses();
    header->add_analyses()->mutable_validate();
  }
  return std::optional<MonitorTicket>(std::move(t));
}

void Monitor::Fold(const MonitorTicket& ticket, v1::ExplainResponse* response) {
  if (ticket.sampled && ticket.model >= 0 && ticket.model < static_cast<int>(models_.size()) &&
      response->results_size() > 0) {
    Model& m = *models_[ticket.model];
    const double now = clock_();
    for (const v1::Tensor& t : response->results(0).maps()) {
      const std::vector<float> values = DecodeAllValues(t);
      const int len = static_cast<int>(values.size());
      absl::MutexLock lock(&m.mu);
      if (m.map_length == 0) {
        if (len < 1 || len > config_.monitor_max_map_length) {
          ++m.skipped_shape;
          continue;
        }
        m.map_length = len;
        const bool grid = int64_t{ticket.grid_h} * ticket.grid_w == len && ticket.grid_h > 0;
        m.grid_h = grid ? ticket.grid_h : 0;
        m.grid_w = grid ? ticket.grid_w : 0;
        m.window = std::make_unique<analysis::MonitorWindow>(
            *analysis::MonitorWindow::Create(WindowOptionsFor(len)));
      }
      if (len != m.map_length) {
        ++m.skipped_shape;
        continue;
      }
      if (!m.window->Add(values, m.region, now).ok()) {
        ++m.skipped_no_mass;
        continue;
      }
      ++m.folded;
      ++m.version;
      if (ticket.group.empty()) continue;
      Model::Group* g = nullptr;
      for (Model::Group& x : m.groups) {
        if (x.label == ticket.group) g = &x;
      }
      if (g == nullptr) {
        if (static_cast<int>(m.groups.size()) >= config_.monitor_max_groups) {
          ++m.group_overflow;
          continue;
        }
        m.groups.push_back({ticket.group, std::make_unique<analysis::MonitorWindow>(
                                              *analysis::MonitorWindow::Create(WindowOptionsFor(len)))});
        g = &m.groups.back();
      }
      (void)g->window->Add(values, m.region, now);
    }
  }
  if (ticket.monitor_only) response->clear_results();
}

void Monitor::Use(Model& m, std::shared_ptr<const v1::Baseline> baseline) {
  absl::MutexLock lock(&m.mu);
  if (baseline != nullptr) {
    const int n = static_cast<int>(baseline->map_length());
    if (m.map_length == 0) {
      m.map_length = n;
      m.grid_h = static_cast<int>(baseline->grid_height());
      m.grid_w = static_cast<int>(baseline->grid_width());
      m.window = std::make_unique<analysis::MonitorWindow>(*analysis::MonitorWindow::Create(WindowOptionsFor(n)));
    } else if (m.grid_h == 0 && baseline->grid_height() > 0) {
      m.grid_h = static_cast<int>(baseline->grid_height());
      m.grid_w = static_cast<int>(baseline->grid_width());
    }
    if (baseline->has_region()) {
      std::vector<uint8_t> mask = MaskOf(baseline->region());
      if (mask != m.region) {
        // The region statistics restart with the new mask.
        m.region = std::move(mask);
        m.window->ClearRegion();
        for (Model::Group& g : m.groups) g.window->ClearRegion();
      }
    }
  }
  m.baseline = std::move(baseline);
  ++m.version;
}

Monitor::Snapshot Monitor::Take(Model& m) {
  Snapshot s;
  const double now = clock_();
  absl::MutexLock lock(&m.mu);
  s.map_length = m.map_length;
  s.grid_h = m.grid_h;
  s.grid_w = m.grid_w;
  if (m.window != nullptr) {
    m.window->Rotate(now);
    s.overall = m.window->Merged();
    for (Model::Group& g : m.groups) {
      g.window->Rotate(now);
      s.groups.emplace_back(g.label, g.window->Merged());
    }
  }
  std::sort(s.groups.begin(), s.groups.end(),
            [](const auto& x, const auto& y) { return x.first < y.first; });
  s.region = m.region;
  s.baseline = m.baseline;
  s.folded = m.folded;
  s.skipped_shape = m.skipped_shape;
  s.skipped_no_mass = m.skipped_no_mass;
  s.group_overflow = m.group_overflow;
  s.version = m.version;
  return s;
}

absl::StatusOr<v1::MonitorResponse> Monitor::State(const v1::MonitorRequest& request) {
  if (models_.empty()) return absl::FailedPreconditionError(RefusedNoModels());
  std::vector<int> which;
  if (request.model().empty()) {
    for (size_t i = 0; i < models_.size(); ++i) which.push_back(static_cast<int>(i));
  } else {
    absl::StatusOr<int> i = ModelIndex(request.model(), "model");
    if (!i.ok()) return i.status();
    which.push_back(*i);
  }
  if (request.include_maps()) {
    // Two fp32 maps per window (live and baseline), bounded like any response.
    int64_t bytes = 0;
    for (int i : which) {
      absl::MutexLock lock(&models_[i]->mu);
      bytes += int64_t{2} * 4 * models_[i]->map_length * (1 + static_cast<int64_t>(models_[i]->groups.size()));
    }
    if (bytes > config_.limits.max_response_bytes) {
      return runtime::Refused(runtime::Refusal::kLimits,
                              absl::StrCat("include_maps: the mean maps take ", bytes,
                                           " bytes, the server's --max-response-bytes is ",
                                           config_.limits.max_response_bytes, "; ask for one model"));
    }
  }
  v1::MonitorResponse out;
  v1::MonitorConfig* c = out.mutable_config();
  for (const std::string& name : config_.monitor_models) c->add_models(name);
  const analysis::WindowOptions o = WindowOptionsFor(1);
  c->set_bucket_samples(o.bucket_samples);
  c->set_bucket_seconds(o.bucket_seconds);
  c->set_buckets(o.buckets);
  c->set_max_groups(config_.monitor_max_groups);
  for (int i : which) {
    Model& m = *models_[i];
    Snapshot s = Take(m);
    v1::ModelMonitor* mm = out.add_models();
    mm->set_model(m.name);
    mm->set_baseline(s.baseline != nullptr ? s.baseline->name() : "");
    mm->set_passes(m.passes.load());
    mm->set_sampled_passes(m.sampled.load());
    mm->set_samples(s.folded);
    mm->mutable_skipped()->set_shape(s.skipped_shape);
    mm->mutable_skipped()->set_no_mass(s.skipped_no_mass);
    mm->mutable_skipped()->set_group_overflow(s.group_overflow);
    mm->set_map_length(s.map_length);
    mm->set_grid_height(s.grid_h);
    mm->set_grid_width(s.grid_w);
    if (s.baseline != nullptr) mm->set_region_name(s.baseline->region_name());
    if (s.map_length == 0) continue;
    *mm->add_windows() = DriftOf("", s.overall, s.baseline, s.grid_h, s.grid_w, request.include_maps());
    for (const auto& [label, sums] : s.groups) {
      *mm->add_windows() = DriftOf(label, sums, s.baseline, s.grid_h, s.grid_w, request.include_maps());
    }
  }
  return out;
}

std::vector<runtime::MonitorFigures> Monitor::Figures() {
  std::vector<runtime::MonitorFigures> out;
  const double now = clock_();
  const int64_t bucket = config_.monitor_window_seconds > 0
                             ? static_cast<int64_t>(std::floor(now / (config_.monitor_window_seconds /
                                                                      config_.monitor_buckets)))
                             : 0;
  for (auto& mp : models_) {
    Model& m = *mp;
    uint64_t version;
    {
      absl::MutexLock lock(&m.mu);
      version = m.version;
    }
    {
      absl::MutexLock lock(&m.cache_mu);
      if (!(m.cached && m.cached_version == version && m.cached_bucket == bucket)) {
        Snapshot s = Take(m);
        runtime::MonitorFigures f;
        f.model = m.name;
        f.has_baseline = s.baseline != nullptr;
        f.folded = s.folded;
        f.skipped_shape = s.skipped_shape;
        f.skipped_no_mass = s.skipped_no_mass;
        f.group_overflow = s.group_overflow;
        f.window_samples = s.overall.samples;
        if (s.baseline != nullptr && s.map_length > 0) {
          analysis::Drift d;
          DriftOf("", s.overall, s.baseline, s.grid_h, s.grid_w, false, &d);
          f.region = s.baseline->has_region() ? s.baseline->region_name() : "";
          for (int k = 0; k < analysis::kNumDriftMetrics; ++k) {
            const auto metric = static_cast<analysis::DriftMetric>(k);
            if (!d.values[k].value.has_value()) continue;
            if (metric == analysis::DriftMetric::kRegionShareBase) {
              f.region_share_base = d.values[k].value;
            } else if (metric == analysis::DriftMetric::kRegionShareLive) {
              f.region_share_live = d.values[k].value;
            } else {
              f.drift.emplace_back(analysis::DriftMetricName(metric), *d.values[k].value);
            }
          }
        }
        m.figures = std::move(f);
        m.cached = true;
        m.cached_version = s.version;
        m.cached_bucket = bucket;
      }
      out.push_back(m.figures);
    }
    out.back().passes = m.passes.load();
    out.back().sampled_passes = m.sampled.load();
  }
  return out;
}

absl::StatusOr<v1::PinBaselineResponse> Monitor::Pin(const v1::PinBaselineRequest& r) {
  if (models_.empty()) return absl::FailedPreconditionError(RefusedNoModels());
  absl::MutexLock lock(&baselines_mu_);
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        "--data-dir: not set: the server stores no baselines (start it with --data-dir)");
  }
  if (!ValidBaselineName(r.name())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "name: expected 1 to 64 characters of [A-Za-z0-9_.-] starting with a letter or digit, got ",
        Quoted(r.name().substr(0, 80)), r.name().size() > 80 ? "..." : ""));
  }
  absl::StatusOr<int> index = ModelIndex(r.model(), "model");
  if (!index.ok()) return index.status();
  Model& m = *models_[*index];
  if (store_->baselines().count(r.name()) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("name: a baseline ", Quoted(r.name()), " already exists"));
  }
  {
    absl::MutexLock l(&m.mu);
    if (m.baseline != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("model: ", Quoted(m.name), " already has baseline ",
                                                        Quoted(m.baseline->name()),
                                                        "; remove it first (one baseline per model)"));
    }
  }
  if (static_cast<int>(store_->baselines().size()) >= config_.max_baselines) {
    return runtime::Refused(runtime::Refusal::kLimits,
                            absl::StrCat("baselines: ", store_->baselines().size(),
                                         " are stored, the server's --max-baselines is ",
                                         config_.max_baselines));
  }
  if (!r.region_name().empty() && !ValidRegionName(r.region_name())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "region_name: expected 1 to 32 characters of [a-z0-9_], got ", Quoted(r.region_name().substr(0, 80))));
  }
  if (!r.region_name().empty() && !r.has_region()) {
    return absl::InvalidArgumentError("region_name: set without a region");
  }
  if (r.has_region()) {
    if (absl::Status s = CheckTensorBytes(r.region(), "region"); !s.ok()) return s;
  }
  v1::Baseline b;
  b.set_name(r.name());
  b.set_model(m.name);
  b.set_pinned_unix_seconds(clock_());
  Snapshot s = Take(m);
  switch (r.source_case()) {
    case v1::PinBaselineRequest::kAudit: {
      const v1::AuditReport& report = r.audit().report();
      const bool candidate = r.audit().side() == v1::AUDIT_SIDE_CANDIDATE;
      b.set_source(v1::BASELINE_SOURCE_AUDIT_REPORT);
      auto stats_of = [candidate](const v1::AuditAggregate& a, v1::SampleStats* out) {
        const v1::Tensor& t = candidate ? a.mean_candidate() : a.mean_baseline();
        out->set_group(a.group());
        out->set_samples(a.items());
        *out->mutable_mean_map() = t;
        return a.items() > 0 && (candidate ? a.has_mean_candidate() : a.has_mean_baseline());
      };
      if (!stats_of(report.overall(), b.mutable_overall())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "audit.report.overall: expected items with mean maps, got ", report.overall().items(), " items",
            report.overall().items() > 0 ? " and no mean map" : ""));
      }
      if (absl::Status st = CheckTensorBytes(b.overall().mean_map(), "audit.report.overall.mean_map"); !st.ok()) {
        return st;
      }
      const int64_t n = static_cast<int64_t>(DecodeAllValues(b.overall().mean_map()).size());
      b.set_map_length(static_cast<uint32_t>(std::min<int64_t>(n, UINT32_MAX)));
      b.set_grid_height(report.grid_height());
      b.set_grid_width(report.grid_width());
      // The groups a live window can have (--monitor-max-groups), in the report's order (by label).
      for (const v1::AuditAggregate& g : report.groups()) {
        if (b.groups_size() >= config_.monitor_max_groups) break;
        v1::SampleStats gs;
        if (stats_of(g, &gs)) *b.add_groups() = std::move(gs);
      }
      break;
    }
    case v1::PinBaselineRequest::kLive: {
      b.set_source(v1::BASELINE_SOURCE_LIVE);
      if (s.map_length == 0 || s.overall.samples == 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("live: model ", Quoted(m.name), "'s live window has no sample yet"));
      }
      b.set_map_length(s.map_length);
      b.set_grid_height(s.grid_h);
      b.set_grid_width(s.grid_w);
      // The region-share distribution was collected under the model's
      // current mask: kept only when the baseline's region is that mask.
      const bool same_region = r.has_region() && MaskOf(r.region()) == s.region;
      auto stats = [&](const std::string& label, const analysis::WindowSums& sums) {
        v1::SampleStats st = ToStats(label, analysis::Summarise(sums), s.grid_h, s.grid_w, true);
        if (!same_region) st.mutable_scalars()->erase("region_share");
        return st;
      };
      *b.mutable_overall() = stats("", s.overall);
      for (const auto& [label, sums] : s.groups) {
        if (sums.samples > 0) *b.add_groups() = stats(label, sums);
      }
      break;
    }
    default:
      return absl::InvalidArgumentError("source: expected audit or live, got neither");
  }
  if (static_cast<int64_t>(b.map_length()) > config_.monitor_max_map_length) {
    return runtime::Refused(runtime::Refusal::kLimits,
                            absl::StrCat("map_length: the baseline's maps have ", b.map_length(),
                                         " values, the server's --monitor-max-map-length is ",
                                         config_.monitor_max_map_length));
  }
  if (s.map_length != 0 && static_cast<int>(b.map_length()) != s.map_length) {
    return absl::InvalidArgumentError(absl::StrCat("audit.report: its maps have ", b.map_length(),
                                                   " values, the live window of model ", Quoted(m.name),
                                                   " has maps of ", s.map_length));
  }
  if (r.has_region()) {
    const size_t len = DecodeAllValues(r.region()).size();
    if (len != b.map_length()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "region: expected ", b.map_length(), " values (the baseline's map length), got ", len));
    }
    *b.mutable_region() = r.region();
    b.set_region_name(r.region_name().empty() ? "region" : r.region_name());
  }
  if (absl::Status st = CheckBaseline(b); !st.ok()) return st;
  absl::StatusOr<std::string> path = store_->Put(b);
  if (!path.ok()) return path.status();
  auto shared = std::make_shared<const v1::Baseline>(b);
  Use(m, shared);
  v1::PinBaselineResponse out;
  out.set_path(*path);
  v1::BaselineSummary* sum = out.mutable_baseline();
  sum->set_name(b.name());
  sum->set_model(b.model());
  sum->set_source(b.source());
  sum->set_pinned_unix_seconds(b.pinned_unix_seconds());
  sum->set_map_length(b.map_length());
  sum->set_grid_height(b.grid_height());
  sum->set_grid_width(b.grid_width());
  sum->set_region_name(b.region_name());
  sum->set_samples(b.overall().samples());
  for (const v1::SampleStats& g : b.groups()) sum->add_groups(g.group());
  return out;
}

absl::StatusOr<v1::ListBaselinesResponse> Monitor::List() {
  absl::MutexLock lock(&baselines_mu_);
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        "--data-dir: not set: the server stores no baselines (start it with --data-dir)");
  }
  v1::ListBaselinesResponse out;
  for (const auto& [name, b] : store_->baselines()) {
    v1::BaselineSummary* s = out.add_baselines();
    s->set_name(b.name());
    s->set_model(b.model());
    s->set_source(b.source());
    s->set_pinned_unix_seconds(b.pinned_unix_seconds());
    s->set_map_length(b.map_length());
    s->set_grid_height(b.grid_height());
    s->set_grid_width(b.grid_width());
    s->set_region_name(b.region_name());
    s->set_samples(b.overall().samples());
    for (const v1::SampleStats& g : b.groups()) s->add_groups(g.group());
  }
  return out;
}

absl::StatusOr<v1::RemoveBaselineResponse> Monitor::Remove(const v1::RemoveBaselineRequest& r) {
  absl::MutexLock lock(&baselines_mu_);
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        "--data-dir: not set: the server stores no baselines (start it with --data-dir)");
  }
  if (!ValidBaselineName(r.name())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "name: expected 1 to 64 characters of [A-Za-z0-9_.-] starting with a letter or digit, got ",
        Quoted(r.name().substr(0, 80))));
  }
  if (absl::Status s = store_->Remove(r.name()); !s.ok()) return s;
  for (auto& mp : models_) {
    bool used;
    {
      absl::MutexLock l(&mp->mu);
      used = mp->baseline != nullptr && mp->baseline->name() == r.name();
    }
    if (used) Use(*mp, nullptr);
  }
  return v1::RemoveBaselineResponse();
}

int64_t Monitor::window_bytes() const {
  int64_t total = 0;
  for (const auto& mp : models_) {
    absl::MutexLock l(&mp->mu);
    if (mp->window != nullptr) total += mp->window->bytes();
    for (const Model::Group& g : mp->groups) total += g.window->bytes();
  }
  return total;
}

}  // namespace attnroll::session
