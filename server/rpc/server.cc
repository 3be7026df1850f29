#include "server/rpc/server.h"

#include <exception>
#include <limits>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"

namespace attnroll::rpc {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const runtime::ServerConfig& raw) {
  const runtime::ServerConfig config = runtime::Resolved(raw);
  std::unique_ptr<Server> s(new Server());
  s->pool_ = std::make_unique<runtime::WorkerPool>(config.workers, config.queue_size, &s->metrics_);
  s->budget_ = std::make_unique<runtime::MemoryBudget>(config.max_memory_bytes);
  s->ctx_.config = config;
  s->ctx_.pool = s->pool_.get();
  s->ctx_.budget = s->budget_.get();
  s->ctx_.metrics = &s->metrics_;

  if (!config.metrics_listen.empty()) {
    try {
      s->exposer_ = std::make_unique<prometheus::Exposer>(config.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("metrics: cannot listen on ", config.metrics_listen, ": ", e.what()));
    }
    s->exposer_->RegisterCollectable(s->metrics_.registry());
    const std::vector<int> ports = s->exposer_->GetListeningPorts();
    s->metrics_port_ = ports.empty() ? 0 : ports.front();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  s->service_ = std::make_unique<AttnrollServiceImpl>(&s->ctx_);
  grpc::ServerBuilder builder;
  s->ports_.assign(config.listen.size(), 0);
  for (size_t i = 0; i < config.listen.size(); ++i) {
    builder.AddListeningPort(config.listen[i], grpc::InsecureServerCredentials(), &s->ports_[i]);
  }
  builder.RegisterService(s->service_.get());
  const int64_t cap = config.limits.max_message_bytes;
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(cap, std::numeric_limits<int>::max())));
  builder.SetMaxSendMessageSize(std::numeric_limits<int>::max());
  s->server_ = builder.BuildAndStart();
  for (size_t i = 0; i < config.listen.size(); ++i) {
    if (s->server_ == nullptr || s->ports_[i] == 0) {
      return absl::UnavailableError(absl::StrCat("grpc: cannot listen on ", config.listen[i]));
    }
  }
  auto* health = s->server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(v1::AttnrollService::service_full_name(), true);
  return s;
}

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  ctx_.shutting_down = true;
  server_->GetHealthCheckService()->Shutdown();  // every service NOT_SERVING
  // Calls in flight get `grace`, then are cancelled; their reactors end.
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

Server::~Server() {
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
  server_.reset();
  pool_.reset();  // runs queued tasks (they see cancelled calls) and joins
}

}  // namespace attnroll::rpc
