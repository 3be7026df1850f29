// Prometheus metrics of the service (prefix attnroll_, base units, bounded
// labels). Served on its own HTTP port by server.cc.
#ifndef ATTNROLL_SERVER_SERVICE_METRICS_H_
#define ATTNROLL_SERVER_SERVICE_METRICS_H_

#include <cstdint>
#include <memory>

#include <grpcpp/support/status.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace attnroll::service {

class Metrics {
 public:
  Metrics();
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void PassStarted();
  // rpc is "Explain" or "ExplainStream".
  void PassFinished(const char* rpc, grpc::StatusCode code, double seconds);
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

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_METRICS_H_
