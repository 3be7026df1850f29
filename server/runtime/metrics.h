// Prometheus metrics of the service (prefix attnroll_, base units, bounded
// labels). Served on its own HTTP port by the rpc room's server wiring.
#ifndef ATTNROLL_SERVER_RUNTIME_METRICS_H_
#define ATTNROLL_SERVER_RUNTIME_METRICS_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"

namespace attnroll::runtime {

class Metrics {
 public:
  Metrics();
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void PassStarted();
  // rpc is the method name ("Explain", "ExplainStream", ...); the code is
  // exported by its canonical name ("OK", "INVALID_ARGUMENT", ...).
  void PassFinished(const char* rpc, absl::StatusCode code, double seconds);
  void AttentionBytes(int64_t bytes) { bytes_->Increment(static_cast<double>(bytes)); }
  void SetMemoryReserved(int64_t bytes) { memory_->Set(static_cast<double>(bytes)); }
  void SetQueueDepth(size_t depth) { queue_->Set(static_cast<double>(depth)); }
  void QueueRejected() { rejected_->Increment(); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* passes_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Gauge* in_flight_;
  prometheus::Counter* bytes_;
  prometheus::Gauge* memory_;
  prometheus::Gauge* queue_;
  prometheus::Counter* rejected_;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_METRICS_H_
