#include "server/service/service_context.h"

#include "absl/strings/str_cat.h"

namespace attnroll::service {

absl::Status ReserveMemory(ServiceContext& ctx, int64_t bytes, absl::string_view what,
                           MemoryBudget::Reservation* out) {
  if (!ctx.budget->TryReserve(bytes, out)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "memory: ", what, " needs ", bytes, " bytes of working memory; ", ctx.budget->reserved(),
        " of the server's max_memory_bytes of ", ctx.budget->capacity(), " are in use"));
  }
  ctx.metrics->SetMemoryReserved(ctx.budget->reserved());
  return absl::OkStatus();
}

absl::StatusOr<OpenPass> OpenPassFromHeader(ServiceContext& ctx, const v1::PassHeader& header) {
  if (ctx.shutting_down.load()) {
    return absl::UnavailableError("server: shutting down, not accepting new passes");
  }
  absl::StatusOr<std::unique_ptr<Pass>> session =
      CreatePass(header, ctx.config.limits, ctx.config.workers);
  if (!session.ok()) return session.status();
  OpenPass pass;
  if (absl::Status s = ReserveMemory(ctx, (*session)->working_bytes(), "the pass", &pass.reservation);
      !s.ok()) {
    return s;
  }
  pass.session = std::move(*session);
  pass.started = absl::Now();
  ctx.metrics->PassStarted();
  return pass;
}

void ClosePass(ServiceContext& ctx, OpenPass& pass, const char* rpc, const absl::Status& status) {
  if (pass.session == nullptr) return;
  pass.session.reset();
  pass.reservation.Release();
  ctx.metrics->SetMemoryReserved(ctx.budget->reserved());
  ctx.metrics->PassFinished(rpc, static_cast<grpc::StatusCode>(status.code()),
                            absl::ToDoubleSeconds(absl::Now() - pass.started));
}

}  // namespace attnroll::service
