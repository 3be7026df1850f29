#include "server/service/attnroll_service.h"

#include "server/service/explain_reactor.h"
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
  info->add_analyses("rollout");
  info->add_dtypes(v1::DTYPE_FP32);
  info->add_dtypes(v1::DTYPE_FP16);
  info->add_dtypes(v1::DTYPE_BF16);
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace attnroll::service
