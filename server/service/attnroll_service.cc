#include "server/service/attnroll_service.h"

#include "absl/strings/str_cat.h"
#include "server/service/audit_reactor.h"
#include "server/service/compare_request.h"
#include "server/service/explain_reactor.h"
#include "server/service/pair_reactor.h"
#include "server/service/status_util.h"
#include "server/service/stream_reactor.h"

namespace attnroll::service {

grpc::ServerReadReactor<v1::ExplainRequest>* AttnrollServiceImpl::Explain(
    grpc::CallbackServerContext* call, v1::ExplainResponse* response) {
  return new ExplainReactor(call, response, ctx_);
}

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* AttnrollServiceImpl::ExplainStream(
    grpc::CallbackServerContext* call) {
  return new StreamReactor(call, ctx_);
}

grpc::ServerReadReactor<v1::PairRequest>* AttnrollServiceImpl::ExplainPair(
    grpc::CallbackServerContext* call, v1::PairResponse* response) {
  return new PairReactor(call, response, ctx_);
}

grpc::ServerBidiReactor<v1::AuditRequest, v1::AuditResponse>* AttnrollServiceImpl::Audit(
    grpc::CallbackServerContext* call) {
  return new AuditReactor(call, ctx_);
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::GetServerInfo(grpc::CallbackServerContext* call,
                                                             const v1::GetServerInfoRequest*,
                                                             v1::ServerInfo* info) {
  const ServerConfig& c = ctx_->config;
  info->set_version(ATTNROLL_VERSION);
  v1::Limits* l = info->mutable_limits();
  l->set_max_layers(c.limits.max_layers);
  l->set_max_heads(c.limits.max_heads);
  l->set_max_tokens(c.limits.max_tokens);
  l->set_max_batch(c.limits.max_batch);
  l->set_max_message_bytes(c.limits.max_message_bytes);
  l->set_max_pass_bytes(c.limits.max_pass_bytes);
  l->set_max_memory_bytes(c.max_memory_bytes);
  l->set_workers(c.workers);
  l->set_queue_size(c.queue_size);
  l->set_max_passes_per_stream(c.max_passes_per_stream);
  l->set_max_flow_cost(c.limits.max_flow_cost);
  info->add_analyses("rollout");
  info->add_analyses("grad-rollout");
  info->add_analyses("flow");
  info->add_analyses("compare");
  info->add_analyses("audit");
  info->add_analyses("explain-pair");
  info->add_dtypes(v1::DTYPE_FP32);
  info->add_dtypes(v1::DTYPE_FP16);
  info->add_dtypes(v1::DTYPE_BF16);
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::Compare(grpc::CallbackServerContext* call,
                                                       const v1::CompareRequest* request,
                                                       v1::CompareResponse* response) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  // Validation, decoding and the metrics all run on a worker, never here.
  const bool queued = ctx_->pool->TrySubmit([this, call, request, response, reactor] {
    if (call->IsCancelled()) return reactor->Finish(grpc::Status::CANCELLED);
    absl::StatusOr<int64_t> bytes = CompareWorkingBytes(*request, ctx_->config.limits);
    if (!bytes.ok()) return reactor->Finish(ToGrpcStatus(bytes.status()));
    MemoryBudget::Reservation reservation;
    if (absl::Status s = ReserveMemory(*ctx_, *bytes, "the comparison", &reservation); !s.ok()) {
      return reactor->Finish(ToGrpcStatus(s));
    }
    absl::StatusOr<v1::CompareResponse> result = RunCompare(*request, ctx_->config.limits);
    if (result.ok()) *response = std::move(*result);
    reservation.Release();
    ctx_->metrics->SetMemoryReserved(ctx_->budget->reserved());
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  if (!queued) {
    ctx_->metrics->QueueRejected();
    reactor->Finish(ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat(
        "server: worker queue full (", ctx_->pool->max_queued(), " tasks waiting); retry later"))));
  }
  return reactor;
}

}  // namespace attnroll::service
