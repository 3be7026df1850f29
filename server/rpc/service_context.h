// What every RPC handler shares: configuration, the worker pool, the memory
// budget and the metrics (owned by Server, outliving every reactor), and the
// steps every reactor takes the same way: opening a pass from its header,
// closing it, building the context its Finish runs with.
#ifndef ATTNROLL_SERVER_RPC_SERVICE_CONTEXT_H_
#define ATTNROLL_SERVER_RPC_SERVICE_CONTEXT_H_

#include <atomic>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/runtime/config.h"
#include "server/runtime/memory_budget.h"
#include "server/runtime/metrics.h"
#include "server/runtime/worker_pool.h"
#include "server/session/pass.h"

namespace attnroll::rpc {

struct ServiceContext {
  runtime::ServerConfig config;
  runtime::WorkerPool* pool;
  runtime::MemoryBudget* budget;
  runtime::Metrics* metrics;
  std::atomic<bool> shutting_down{false};
};

// A pass with its memory reserved: the session is freed before the reservation.
struct OpenPass {
  runtime::MemoryBudget::Reservation reservation;
  std::unique_ptr<session::Pass> session;
  absl::Time started;
  bool open() const { return session != nullptr; }
};

// Reserves `bytes` of working memory for `what` ("the pass", "the audit"...):
// RESOURCE_EXHAUSTED with the numbers when they do not fit.
absl::Status ReserveMemory(ServiceContext& ctx, int64_t bytes, absl::string_view what,
                           runtime::MemoryBudget::Reservation* out);
// Gives a reservation back and updates the gauge.
void ReleaseMemory(ServiceContext& ctx, runtime::MemoryBudget::Reservation& reservation);

// Header -> an OpenPass: refuses new passes while shutting down, plans the
// pass, reserves its working memory (RESOURCE_EXHAUSTED if over), then
// allocates it. Runs on a worker.
absl::StatusOr<OpenPass> OpenPassFromHeader(ServiceContext& ctx, const v1::PassHeader& header);

// Frees an open pass's memory (then its reservation) and records its outcome
// under `rpc` in the metrics; nothing for a pass that is not open.
void ClosePass(ServiceContext& ctx, OpenPass& pass, const char* rpc, const absl::Status& status);

// The context a pass's Finish runs with on behalf of `call`: cancelled with
// the call; with `parallel`, long analyses may use every worker of the pool.
session::FinishContext MakeFinishContext(ServiceContext& ctx, grpc::CallbackServerContext* call,
                                         bool parallel = true);

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_SERVICE_CONTEXT_H_
