// Wires a running attnroll server: gRPC (service, health, reflection, the
// HTTP/2 limits), the worker pool, admission, timers, and the /metrics
// endpoint.
#ifndef ATTNROLL_SERVER_RPC_SERVER_H_
#define ATTNROLL_SERVER_RPC_SERVER_H_

#include <memory>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <prometheus/exposer.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/rpc/attnroll_service.h"
#include "server/rpc/service_context.h"
#include "server/runtime/admission.h"
#include "server/runtime/config.h"
#include "server/runtime/metrics.h"
#include "server/runtime/timers.h"
#include "server/runtime/worker_pool.h"

namespace attnroll::rpc {

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const runtime::ServerConfig& config);
  ~Server();

  int port() const { return ports_.front(); }  // of the first listen address
  const std::vector<int>& ports() const { return ports_; }  // one per listen address
  int metrics_port() const { return metrics_port_; }  // 0 when disabled
  const runtime::ServerConfig& config() const { return ctx_.config; }
  int64_t memory_reserved() const { return admission_->bytes(); }
  int passes_in_flight() const { return admission_->units(); }
  const runtime::Metrics& metrics() const { return metrics_; }
  session::Monitor& monitor() { return *monitor_; }

  // Drains and stops: health says NOT_SERVING (Check and Watch) while the
  // port stays open; new passes and calls get UNAVAILABLE; passes in flight
  // get `grace` to finish; then the gRPC server stops (what is left is
  // cancelled).
  void Shutdown(absl::Duration grace);

 private:
  Server() = default;
  // Stops /metrics (its live gauges first, then the HTTP server), before
  // the pool and admission they read are destroyed.
  void StopMetricsEndpoint();

  // Declaration order is teardown order, reversed: the gRPC server goes
  // first, the timers last.
  std::unique_ptr<runtime::Timers> timers_;
  runtime::Metrics metrics_;
  std::unique_ptr<runtime::WorkerPool> pool_;
  std::unique_ptr<runtime::Admission> admission_;
  std::unique_ptr<session::Monitor> monitor_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  ServiceContext ctx_;
  std::unique_ptr<AttnrollServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<int> ports_;
  int metrics_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_SERVER_H_
