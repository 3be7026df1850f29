#include "server/rpc/service_context.h"

#include <utility>

#include "server/runtime/refusal.h"

namespace attnroll::rpc {

void OpenPassAsync(ServiceContext& ctx, const v1::PassHeader& header, const std::string& rpc,
                   runtime::Admission::Request who, std::function<void(absl::StatusOr<OpenPass>)> done) {
  const absl::Time started = absl::Now();
  auto refuse = [&ctx, rpc, started](const absl::Status& status) {
    ctx.metrics->PassFinished(rpc, status.code(), absl::ToDoubleSeconds(absl::Now() - started));
  };
  if (ctx.shutting_down.load()) {
    const absl::Status s =
        runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down, not accepting new passes");
    refuse(s);
    return done(s);
  }
  // The monitor tag: checked, sampled; a monitor-only pass that is not
  // sampled is only validated.
  std::optional<v1::PassHeader> rewritten;
  std::optional<session::MonitorTicket> monitor_ticket;
  if (header.has_monitor()) {
    rewritten = header;
    absl::StatusOr<std::optional<session::MonitorTicket>> t = ctx.monitor->Admit(
        &*rewritten, rpc == "Explain" || rpc == "ExplainStream", "header");
    if (!t.ok()) {
      refuse(t.status());
      return done(t.status());
    }
    monitor_ticket = *std::move(t);
  }
  absl::StatusOr<session::PlannedPass> plan = session::PlanFromHeader(
      rewritten.has_value() ? *rewritten : header, ctx.config.limits, ctx.config.workers);
  if (!plan.ok()) {
    refuse(plan.status());
    return done(plan.status());
  }
  who.bytes += plan->working_bytes();  // and what the caller holds for it (a whole pass's message)
  auto shared_plan = std::make_shared<session::PlannedPass>(*std::move(plan));
  ServiceContext* c = &ctx;
  ctx.admission->Admit(std::move(who), [c, rpc, started, shared_plan, refuse, monitor_ticket,
                                        done = std::move(done)](
                                           absl::StatusOr<runtime::Admission::Ticket> ticket) mutable {
    if (!ticket.ok()) {
      refuse(ticket.status());
      return done(ticket.status());
    }
    // Allocation is work: on a worker (admission may answer from the timer
    // thread or from the thread that freed room).
    auto t = std::make_shared<runtime::Admission::Ticket>(*std::move(ticket));
    absl::Status queued = c->pool->Submit(runtime::Lane::kStep, [c, started, shared_plan, t, monitor_ticket,
                                                                 done]() mutable {
      OpenPass pass;
      pass.monitor = monitor_ticket;
      pass.ticket = std::move(*t);
      pass.session = std::move(*shared_plan).Start();
      // Idle workers may help with its large layer messages.
      pass.session->UseHelpers(c->pool, c->pool->num_threads() - 1);
      pass.started = started;
      done(std::move(pass));
    });
    if (!queued.ok()) {  // only when the pool is stopping
      refuse(queued);
      done(queued);
    }
  });
}

absl::Status AddChunk(ServiceContext& ctx, OpenPass& pass, const v1::LayerChunk& chunk) {
  ctx.metrics->AttentionBytes(chunk.attention().data().size() + chunk.gradient().data().size());
  return pass.session->AddChunk(chunk);
}

void ClosePass(ServiceContext& ctx, OpenPass& pass, const std::string& rpc, const absl::Status& status) {
  if (!pass.open()) return;
  pass.session.reset();
  pass.ticket.Release();
  ctx.metrics->PassFinished(rpc, status.code(), absl::ToDoubleSeconds(absl::Now() - pass.started));
}

void FoldMonitored(ServiceContext& ctx, const OpenPass& pass, v1::ExplainResponse* response) {
  if (pass.monitor.has_value()) ctx.monitor->Fold(*pass.monitor, response);
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
