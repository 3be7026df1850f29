#include "server/rpc/service_context.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace attnroll::rpc {

absl::Status ReserveMemory(ServiceContext& ctx, int64_t bytes, absl::string_view what,
                           runtime::MemoryBudget::Reservation* out) {
  if (!ctx.budget->TryReserve(bytes, out)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "memory: ", what, " needs ", bytes, " bytes of working memory; ", ctx.budget->reserved(),
        " of the server's max_memory_bytes of ", ctx.budget->capacity(), " are in use"));
  }
  ctx.metrics->SetMemoryReserved(ctx.budget->reserved());
  return absl::OkStatus();
}

void ReleaseMemory(ServiceContext& ctx, runtime::MemoryBudget::Reservation& reservation) {
  reservation.Release();
  ctx.metrics->SetMemoryReserved(ctx.budget->reserved());
}

absl::StatusOr<OpenPass> OpenPassFromHeader(ServiceContext& ctx, const v1::PassHeader& header) {
  if (ctx.shutting_down.load()) {
    return absl::UnavailableError("server: shutting down, not accepting new passes");
  }
  absl::StatusOr<session::PlannedPass> plan =
      session::PlanFromHeader(header, ctx.config.limits, ctx.config.workers);
  if (!plan.ok()) return plan.status();
  OpenPass pass;
  if (absl::Status s = ReserveMemory(ctx, plan->working_bytes(), "the pass", &pass.reservation);
      !s.ok()) {
    return s;
  }
  pass.session = std::move(*plan).Start();
  pass.started = absl::Now();
  ctx.metrics->PassStarted();
  return pass;
}

void ClosePass(ServiceContext& ctx, OpenPass& pass, const char* rpc, const absl::Status& status) {
  if (!pass.open()) return;
  pass.session.reset();
  ReleaseMemory(ctx, pass.reservation);
  ctx.metrics->PassFinished(rpc, status.code(), absl::ToDoubleSeconds(absl::Now() - pass.started));
}

session::FinishContext MakeFinishContext(ServiceContext& ctx, grpc::CallbackServerContext* call,
                                         bool parallel) {
  session::FinishContext finish;
  if (parallel) {
    finish.pool = ctx.pool;
    finish.helpers = ctx.pool->num_threads() - 1;
  }
  finish.cancelled = [call] { return call->IsCancelled(); };
  return finish;
}

}  // namespace attnroll::rpc
