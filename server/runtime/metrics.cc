#include "server/runtime/metrics.h"

#include <string>

namespace attnroll::runtime {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  passes_ = &prometheus::BuildCounter()
                 .Name("attnroll_passes_total")
                 .Help("Forward passes finished, by RPC and gRPC status code")
                 .Register(*registry_);
  duration_ = &prometheus::BuildHistogram()
                   .Name("attnroll_pass_duration_seconds")
                   .Help("Time from a pass's header to its response")
                   .Register(*registry_);
  in_flight_ = &prometheus::BuildGauge()
                    .Name("attnroll_passes_in_flight")
                    .Help("Passes with a header and no response yet")
                    .Register(*registry_)
                    .Add({});
  bytes_ = &prometheus::BuildCounter()
                .Name("attnroll_attention_received_bytes_total")
                .Help("Attention tensor bytes received")
                .Register(*registry_)
                .Add({});
  memory_ = &prometheus::BuildGauge()
                 .Name("attnroll_memory_reserved_bytes")
                 .Help("Working memory reserved by passes in flight")
                 .Register(*registry_)
                 .Add({});
  queue_ = &prometheus::BuildGauge()
                .Name("attnroll_worker_queue_depth")
                .Help("Tasks waiting for a worker")
                .Register(*registry_)
                .Add({});
  rejected_ = &prometheus::BuildCounter()
                   .Name("attnroll_worker_queue_rejections_total")
                   .Help("Work refused with RESOURCE_EXHAUSTED because the worker queue was full")
                   .Register(*registry_)
                   .Add({});
}

void Metrics::PassStarted() { in_flight_->Increment(); }

void Metrics::PassFinished(const char* rpc, absl::StatusCode code, double seconds) {
  in_flight_->Decrement();
  passes_->Add({{"rpc", rpc}, {"code", absl::StatusCodeToString(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  duration_->Add({{"rpc", rpc}}, kBuckets).Observe(seconds);
}

}  // namespace attnroll::runtime
