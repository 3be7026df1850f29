// Wires a running attnroll server: gRPC (service, health, reflection, the
// HTTP/2 limits, TLS and tokens), the worker pool, admission, timers, the
// /metrics endpoint, and the checks of certificate and token files for
// change.
#ifndef ATTNROLL_SERVER_RPC_SERVER_H_
#define ATTNROLL_SERVER_RPC_SERVER_H_

#include <memory>
#include <vector>

#include <grpcpp/grpcpp.h>
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/rpc/attnroll_service.h"
#include "server/rpc/auth.h"
#include "server/rpc/credentials.h"
#include "server/rpc/metrics_endpoint.h"
#include "server/rpc/service_context.h"
#include "server/rpc/tls_files.h"
#include "server/runtime/admission.h"
#include "server/runtime/config.h"
#include "server/runtime/idle_trim.h"
#include "server/runtime/metrics.h"
#include "server/runtime/periodic.h"
#include "server/runtime/timers.h"
#include "server/runtime/token_table.h"
#include "server/runtime/worker_pool.h"

namespace attnroll::rpc {

class Server {
 public:
  // INVALID_ARGUMENT when a file of the configuration is wrong (a
  // certificate, key, CA or token file: the message names the flag, and the
  // line of a token file); UNAVAILABLE when an address cannot be listened on.
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

  // The end of the process, after Shutdown: the gRPC server, the pool (what
  // is queued runs, then it joins) stop; /metrics gets no
  // more live figures but keeps its threads, which the process's exit ends.
  // civetweb can crash when stopped while it accepts a connection (a scrape
  // racing the exit), so the process must end with std::_Exit next.
  void StopForExit();

  // Checks the token file and the certificate files for change now (they
  // are also checked every --tls-reload-seconds): a changed token file is
  // in use for the next call, the metrics port's certificate for the next
  // handshake, the gRPC port's for new connections within a second. A file
  // that does not load keeps the previous one (logged).
  void Reload();

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
  std::unique_ptr<runtime::IdleTrim> idle_trim_;  // before the pool and admission it uses
  std::unique_ptr<session::Monitor> monitor_;
  std::unique_ptr<runtime::TokenStore> tokens_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<WatchedTlsFiles> grpc_tls_;         // the operator's files
  std::unique_ptr<GrpcTlsFiles> grpc_tls_published_;  // what gRPC reads
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  ServiceContext ctx_;
  std::unique_ptr<AttnrollServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<int> ports_;
  int metrics_port_ = 0;
  bool shut_down_ = false;
  absl::Mutex reload_mu_;  // one Reload at a time (the periodic check, SIGHUP)
  // Last: stops before anything it checks goes.
  std::unique_ptr<runtime::Periodic> reloader_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_SERVER_H_
