// What every RPC handler shares: configuration, the worker pool, the memory
// budget and the metrics. Owned by Server, outlives every reactor.
#ifndef ATTNROLL_SERVER_SERVICE_SERVICE_CONTEXT_H_
#define ATTNROLL_SERVER_SERVICE_SERVICE_CONTEXT_H_

#include <atomic>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/service/config.h"
#include "server/service/memory_budget.h"
#include "server/service/metrics.h"
#include "server/service/pass.h"
#include "server/service/worker_pool.h"

namespace attnroll::service {

struct ServiceContext {
  ServerConfig config;
  WorkerPool* pool;
  MemoryBudget* budget;
  Metrics* metrics;
  std::atomic<bool> shutting_down{false};
};

// A pass with its memory reserved: the session is freed before the reservation.
struct OpenPass {
  MemoryBudget::Reservation reservation;
  std::unique_ptr<Pass> session;
  absl::Time started;
};

// Reserves `bytes` of working memory for `what` ("the pass", "the audit"...):
// RESOURCE_EXHAUSTED with the numbers when they do not fit.
absl::Status ReserveMemory(ServiceContext& ctx, int64_t bytes, absl::string_view what,
                           MemoryBudget::Reservation* out);

// Header -> an OpenPass: refuses new passes while shutting down, validates the
// header and reserves the pass's working memory (RESOURCE_EXHAUSTED if over).
absl::StatusOr<OpenPass> OpenPassFromHeader(ServiceContext& ctx, const v1::PassHeader& header);

// Frees an open pass's memory (then its reservation) and records its outcome
// under `rpc` in the metrics; nothing for a pass that is not open.
void ClosePass(ServiceContext& ctx, OpenPass& pass, const char* rpc, const absl::Status& status);

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_SERVICE_CONTEXT_H_
