// Prometheus metrics of the service (prefix attnroll_, base units, bounded
// labels only: rpc and analysis names, status codes, refusal reasons, queue
// lanes, models from --monitor-models). Counters and histograms are updated as things happen; the gauges
// (passes in flight, reserved bytes, queue depths, RSS) are read from their
// sources at every scrape, so they are true whenever they are read.
#ifndef ATTNROLL_SERVER_RUNTIME_METRICS_H_
#define ATTNROLL_SERVER_RUNTIME_METRICS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "server/runtime/refusal.h"

namespace attnroll::runtime {

// The figures the gauges show, read at scrape time.
struct LiveFigures {
  int64_t passes_in_flight = 0;   // admitted passes and calls
  int64_t admission_waiting = 0;  // new passes waiting for room
  int64_t memory_reserved = 0;
  int64_t memory_capacity = 0;
  int64_t queue_step = 0, queue_long = 0, queue_new = 0;
  int64_t open_connections = 0;   // connections with a pass open
};

// One monitored model's figures, read at scrape time (session::Monitor).
struct MonitorFigures {
  std::string model;
  bool has_baseline = false;
  // Drift numbers of the model's whole window that are defined: metric name -> value.
  std::vector<std::pair<std::string, double>> drift;
  std::string region;  // the baseline's region name, "" without one
  std::optional<double> region_share_live, region_share_base;
  int64_t window_samples = 0;
  int64_t passes = 0, sampled_passes = 0;
  int64_t folded = 0, skipped_shape = 0, skipped_no_mass = 0, group_overflow = 0;
};

class Metrics {
 public:
  Metrics();
  // Both must be registered with the exposer.
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  const std::shared_ptr<prometheus::Collectable>& live() const { return live_; }
  // Where the gauges come from (called at every scrape, from the exposer's thread).
  void SetLiveSource(std::function<LiveFigures()> source);
  // Where the monitoring gauges come from (same thread and timing).
  void SetMonitorSource(std::function<std::vector<MonitorFigures>()> source);

  // Every call of every method, when it ends (rpc: the method name).
  void CallFinished(const std::string& rpc, absl::StatusCode code, double seconds);
  // Every pass (a header received), when it ends, opened or not.
  void PassFinished(const std::string& rpc, absl::StatusCode code, double seconds);
  void Refused(Refusal reason);
  // Worker time of one pass or comparison, by kind (rollout, flow, compare, ...).
  void Compute(const std::string& analysis, double seconds);
  void AttentionBytes(int64_t bytes) { bytes_->Increment(static_cast<double>(bytes)); }
  void QueueRejected() { rejected_->Increment(); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> live_;
  prometheus::Family<prometheus::Counter>* calls_;
  prometheus::Family<prometheus::Histogram>* call_duration_;
  prometheus::Family<prometheus::Counter>* passes_;
  prometheus::Family<prometheus::Histogram>* pass_duration_;
  prometheus::Family<prometheus::Counter>* refusals_;
  prometheus::Family<prometheus::Histogram>* compute_;
  prometheus::Counter* bytes_;
  prometheus::Counter* rejected_;
};

// The process's resident set size, from /proc/self/statm (0 if unreadable).
int64_t ResidentBytes();

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_METRICS_H_
