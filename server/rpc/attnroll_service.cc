#include "server/rpc/attnroll_service.h"

#include "proto/cpp/grpc_status.h"
#include "server/rpc/audit_reactor.h"
#include "server/rpc/call_state.h"
#include "server/rpc/compare_reactor.h"
#include "server/rpc/explain_reactor.h"
#include "server/rpc/monitor_reactor.h"
#include "server/rpc/pair_reactor.h"
#include "server/rpc/stream_reactor.h"
#include "server/runtime/refusal.h"

namespace attnroll::rpc {

v1::ServerInfo ServerInfoOf(const runtime::ServerConfig& c) {
  v1::ServerInfo info;
  info.set_version(ATTNROLL_VERSION);
  v1::Limits* l = info.mutable_limits();
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
  for (const char* a : {"rollout", "grad-rollout", "flow", "encoder-decoder", "validate", "compare", "audit", "explain-pair", "monitor"}) {
    info.add_analyses(a);
  }
  for (v1::DType d : {v1::DTYPE_FP32, v1::DTYPE_FP16, v1::DTYPE_BF16}) info.add_dtypes(d);
  for (const char* form : {"header", "layer", "layers", "whole_pass"}) info.add_request_forms(form);
  return info;
}

grpc::ServerReadReactor<grpc::ByteBuffer>* AttnrollServiceImpl::Explain(
    grpc::CallbackServerContext* call, grpc::ByteBuffer* response) {
  return new ExplainReactor(call, response, ctx_);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* AttnrollServiceImpl::ExplainStream(
    grpc::CallbackServerContext* call) {
  return new StreamReactor(call, ctx_);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* AttnrollServiceImpl::ExplainPair(
    grpc::CallbackServerContext* call, grpc::ByteBuffer* response) {
  return new PairReactor(call, response, ctx_);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* AttnrollServiceImpl::Audit(
    grpc::CallbackServerContext* call) {
  return new AuditReactor(call, ctx_);
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::Compare(grpc::CallbackServerContext* call,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  // The reactor parses the request on a worker (the buffer outlives the call).
  return new CompareReactor(call, const_cast<grpc::ByteBuffer*>(request), response, ctx_);
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::Monitor(grpc::CallbackServerContext* call,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  session::Monitor* m = ctx_->monitor;
  return new MonitorReactor<v1::MonitorRequest, v1::MonitorResponse>(
      call, request, response, ctx_, "Monitor", "MonitorRequest",
      [m](const v1::MonitorRequest& r) { return m->State(r); });
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::PinBaseline(grpc::CallbackServerContext* call,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  session::Monitor* m = ctx_->monitor;
  return new MonitorReactor<v1::PinBaselineRequest, v1::PinBaselineResponse>(
      call, request, response, ctx_, "PinBaseline", "PinBaselineRequest",
      [m](const v1::PinBaselineRequest& r) { return m->Pin(r); });
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::ListBaselines(grpc::CallbackServerContext* call,
                                                             const grpc::ByteBuffer* request,
                                                             grpc::ByteBuffer* response) {
  session::Monitor* m = ctx_->monitor;
  return new MonitorReactor<v1::ListBaselinesRequest, v1::ListBaselinesResponse>(
      call, request, response, ctx_, "ListBaselines", "ListBaselinesRequest",
      [m](const v1::ListBaselinesRequest&) { return m->List(); });
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::RemoveBaseline(grpc::CallbackServerContext* call,
                                                              const grpc::ByteBuffer* request,
                                                              grpc::ByteBuffer* response) {
  session::Monitor* m = ctx_->monitor;
  return new MonitorReactor<v1::RemoveBaselineRequest, v1::RemoveBaselineResponse>(
      call, request, response, ctx_, "RemoveBaseline", "RemoveBaselineRequest",
      [m](const v1::RemoveBaselineRequest& r) { return m->Remove(r); });
}

grpc::ServerUnaryReactor* AttnrollServiceImpl::GetServerInfo(grpc::CallbackServerContext* call,
                                                             const v1::GetServerInfoRequest*,
                                                             v1::ServerInfo* info) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  CallState state(ctx_, call, "GetServerInfo", Access::kInfo);
  absl::Status status = state.authenticated();
  if (status.ok() && ctx_->shutting_down.load()) {
    status = runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down");
  }
  if (status.ok()) *info = ServerInfoOf(ctx_->config);  // a copy of a few fields: fine on this thread
  state.Ended(status);
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace attnroll::rpc
