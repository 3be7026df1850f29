#include "server/runtime/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <thread>
#include <utility>
#include <vector>

#include <prometheus/metric_family.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace attnroll::runtime {
namespace {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
  return kBuckets;
}

prometheus::ClientMetric Value(double v, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  return m;
}

prometheus::ClientMetric Count(double v, std::vector<prometheus::ClientMetric::Label> labels) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  return m;
}

prometheus::MetricFamily Gauge(std::string name, std::string help,
                               std::vector<prometheus::ClientMetric> values) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = prometheus::MetricType::Gauge;
  f.metric = std::move(values);
  return f;
}

// The gauges, computed when scraped.
class LiveGauges : public prometheus::Collectable {
 public:
  void SetSource(std::function<LiveFigures()> source) {
    absl::MutexLock lock(&mu_);
    source_ = std::move(source);
  }
  void SetMonitorSource(std::function<std::vector<MonitorFigures>()> source) {
    absl::MutexLock lock(&mu_);
    monitor_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    LiveFigures f;
    std::vector<MonitorFigures> models;
    {
      absl::MutexLock lock(&mu_);
      if (source_) f = source_();
      if (monitor_) {
        // Drift figures (EMD and friends) may need more stack than civetweb's
        // worker threads have (fixed when the library is built: 100 KiB in
        // Debian 12's), so they are computed on a thread of the default size.
        std::thread compute([&] { models = monitor_(); });
        compute.join();
      }
    }
    std::vector<prometheus::MetricFamily> out = {
        Gauge("attnroll_passes_in_flight", "Admitted passes and calls not finished yet",
              {Value(static_cast<double>(f.passes_in_flight))}),
        Gauge("attnroll_admission_waiting", "New passes waiting for room to be admitted",
              {Value(static_cast<double>(f.admission_waiting))}),
        Gauge("attnroll_memory_reserved_bytes", "Working memory reserved by admitted passes and calls",
              {Value(static_cast<double>(f.memory_reserved))}),
        Gauge("attnroll_memory_budget_bytes", "The memory budget (max_memory_bytes)",
              {Value(static_cast<double>(f.memory_capacity))}),
        Gauge("attnroll_worker_queue_depth", "Tasks waiting for a worker, by lane",
              {Value(static_cast<double>(f.queue_step), {{"lane", "step"}}),
               Value(static_cast<double>(f.queue_long), {{"lane", "long"}}),
               Value(static_cast<double>(f.queue_new), {{"lane", "new"}})}),
        Gauge("attnroll_open_connections", "Connections with at least one pass open",
              {Value(static_cast<double>(f.open_connections))}),
        Gauge("process_resident_memory_bytes", "Resident memory size in bytes",
              {Value(static_cast<double>(ResidentBytes()))}),
        Gauge("attnroll_build_info", "Always 1; the version is a label",
              {Value(1.0, {{"version", ATTNROLL_VERSION}})}),
    };
    if (!models.empty()) AppendMonitor(models, &out);
    return out;
  }

  static void AppendMonitor(const std::vector<MonitorFigures>& models,
                            std::vector<prometheus::MetricFamily>* out) {
    std::vector<prometheus::ClientMetric> drift, share, base_share, window, pinned, passes, samples;
    for (const MonitorFigures& m : models) {
      for (const auto& [metric, v] : m.drift) drift.push_back(Value(v, {{"model", m.model}, {"metric", metric}}));
      if (!m.region.empty() && m.region_share_live.has_value()) {
        share.push_back(Value(*m.region_share_live, {{"model", m.model}, {"region", m.region}}));
      }
      if (!m.region.empty() && m.region_share_base.has_value()) {
        base_share.push_back(Value(*m.region_share_base, {{"model", m.model}, {"region", m.region}}));
      }
      window.push_back(Value(static_cast<double>(m.window_samples), {{"model", m.model}}));
      pinned.push_back(Value(m.has_baseline ? 1.0 : 0.0, {{"model", m.model}}));
      passes.push_back(Count(static_cast<double>(m.sampled_passes), {{"model", m.model}, {"sampled", "true"}}));
      passes.push_back(Count(static_cast<double>(m.passes - m.sampled_passes),
                             {{"model", m.model}, {"sampled", "false"}}));
      samples.push_back(Count(static_cast<double>(m.folded), {{"model", m.model}, {"outcome", "folded"}}));
      samples.push_back(Count(static_cast<double>(m.skipped_shape), {{"model", m.model}, {"outcome", "shape"}}));
      samples.push_back(Count(static_cast<double>(m.skipped_no_mass), {{"model", m.model}, {"outcome", "no_mass"}}));
      samples.push_back(Count(static_cast<double>(m.group_overflow),
                              {{"model", m.model}, {"outcome", "group_overflow"}}));
    }
    out->push_back(Gauge("attnroll_reliance_drift",
                         "Drift of a model's live window from its pinned baseline, by metric "
                         "(js_divergence nats, emd and com_shift cells, region_share_delta share "
                         "points, *_w1 per-pass distributions); absent while undefined",
                         std::move(drift)));
    out->push_back(Gauge("attnroll_region_share",
                         "Share of the live window's mean map inside the baseline's region",
                         std::move(share)));
    out->push_back(Gauge("attnroll_baseline_region_share",
                         "Share of the pinned baseline's mean map inside its region", std::move(base_share)));
    out->push_back(Gauge("attnroll_monitor_window_samples", "Samples (maps) in a model's live window",
                         std::move(window)));
    out->push_back(Gauge("attnroll_monitor_baseline_pinned", "1 when the model has a pinned baseline",
                         std::move(pinned)));
    prometheus::MetricFamily p = Gauge("attnroll_monitor_passes_total",
                                       "Passes tagged with a model, sampled or not", std::move(passes));
    p.type = prometheus::MetricType::Counter;
    out->push_back(std::move(p));
    prometheus::MetricFamily s = Gauge("attnroll_monitor_samples_total",
                                       "Samples of sampled passes: folded, or skipped by reason "
                                       "(group_overflow: folded into the model's window only)",
                                       std::move(samples));
    s.type = prometheus::MetricType::Counter;
    out->push_back(std::move(s));
  }

 private:
  mutable absl::Mutex mu_;
  std::function<LiveFigures()> source_ ABSL_GUARDED_BY(mu_);
  std::function<std::vector<MonitorFigures>()> monitor_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int64_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long long size = 0, resident = 0;
  const int read = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  return read == 2 ? resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()), live_(std::make_shared<LiveGauges>()) {
  calls_ = &prometheus::BuildCounter()
                .Name("attnroll_rpcs_total")
                .Help("Calls finished, by method and gRPC status code, refused or not")
                .Register(*registry_);
  call_duration_ = &prometheus::BuildHistogram()
                        .Name("attnroll_rpc_duration_seconds")
                        .Help("Time from a call's start to its status, by method")
                        .Register(*registry_);
  passes_ = &prometheus::BuildCounter()
                 .Name("attnroll_passes_total")
                 .Help("Forward passes finished (every header received), by method and status code")
                 .Register(*registry_);
  pass_duration_ = &prometheus::BuildHistogram()
                        .Name("attnroll_pass_duration_seconds")
                        .Help("Time from a pass's header to its response or error, by method")
                        .Register(*registry_);
  refusals_ = &prometheus::BuildCounter()
                   .Name("attnroll_refusals_total")
                   .Help("Passes and calls refused, by reason")
                   .Register(*registry_);
  for (Refusal r : kAllRefusals) refusals_->Add({{"reason", RefusalName(r)}});
  compute_ = &prometheus::BuildHistogram()
                  .Name("attnroll_compute_seconds")
                  .Help("Worker time of one pass or comparison, by analysis kind")
                  .Register(*registry_);
  bytes_ = &prometheus::BuildCounter()
                .Name("attnroll_attention_received_bytes_total")
                .Help("Attention (and gradient) tensor bytes received")
                .Register(*registry_)
                .Add({});
  rejected_ = &prometheus::BuildCounter()
                   .Name("attnroll_worker_queue_rejections_total")
                   .Help("New work refused with RESOURCE_EXHAUSTED because the worker queue was full")
                   .Register(*registry_)
                   .Add({});
}

void Metrics::SetLiveSource(std::function<LiveFigures()> source) {
  static_cast<LiveGauges*>(live_.get())->SetSource(std::move(source));
}

void Metrics::SetMonitorSource(std::function<std::vector<MonitorFigures>()> source) {
  static_cast<LiveGauges*>(live_.get())->SetMonitorSource(std::move(source));
}

void Metrics::CallFinished(const std::string& rpc, absl::StatusCode code, double seconds) {
  calls_->Add({{"rpc", rpc}, {"code", absl::StatusCodeToString(code)}}).Increment();
  call_duration_->Add({{"rpc", rpc}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::PassFinished(const std::string& rpc, absl::StatusCode code, double seconds) {
  passes_->Add({{"rpc", rpc}, {"code", absl::StatusCodeToString(code)}}).Increment();
  pass_duration_->Add({{"rpc", rpc}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::Refused(Refusal reason) { refusals_->Add({{"reason", RefusalName(reason)}}).Increment(); }

void Metrics::Compute(const std::string& analysis, double seconds) {
  compute_->Add({{"analysis", analysis}}, LatencyBuckets()).Observe(seconds);
}

}  // namespace attnroll::runtime
