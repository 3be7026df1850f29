#include "server/rpc/server.h"

#include <malloc.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <limits>
#include <string>
#include <thread>

#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc/health/v1/health.pb.h"
#include "server/session/pass_buffers.h"
#include "server/rpc/credentials.h"
#include "server/rpc/security_log.h"
#include "server/runtime/logging.h"

namespace attnroll::rpc {
namespace {

int Millis(double seconds) {
  return static_cast<int>(std::min<double>(seconds * 1000.0, std::numeric_limits<int>::max()));
}

// HTTP/2 and connection limits: bounded streams per connection and receive
// windows (gRPC's buffers), keepalive, connection idleness and age.
void ApplyConnectionLimits(const runtime::ServerConfig& c, grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, c.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(c.keepalive_time_seconds));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Millis(c.keepalive_timeout_seconds));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             Millis(c.min_client_ping_interval_seconds));
  if (c.max_connection_idle_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, Millis(c.max_connection_idle_seconds));
  }
  if (c.max_connection_age_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Millis(c.max_connection_age_seconds));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               Millis(c.max_connection_age_grace_seconds));
  }
  // Large messages (a layer of attention is megabytes) in few, large HTTP/2
  // frames and with a receive window that lets a sender keep the connection
  // busy; what gRPC buffers stays within the resource quota below.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
  // gRPC's own memory (receive buffers, parsing) is capped by a resource quota.
  grpc::ResourceQuota quota("attnroll");
  quota.Resize(static_cast<size_t>(c.grpc_memory_bytes));
  builder.SetResourceQuota(quota);
  const int64_t cap = c.limits.max_message_bytes;
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(cap, std::numeric_limits<int>::max())));
  builder.SetMaxSendMessageSize(std::numeric_limits<int>::max());
}

// Opens and at once closes a TCP connection to HOST:PORT of a listen address
// (a wildcard host as loopback); errors are ignored.
void Poke(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const bool connected = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    close(fd);
    if (connected) break;
  }
  freeaddrinfo(found);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const runtime::ServerConfig& raw) {
  const runtime::ServerConfig config = runtime::Resolved(raw);
  std::unique_ptr<Server> s(new Server());
  // Passes of the same shape reuse each other's large buffers.
  session::UsePooledPassBuffers(config.buffer_cache_bytes);
  s->timers_ = std::make_unique<runtime::Timers>();
  s->pool_ = std::make_unique<runtime::WorkerPool>(config.workers, config.long_work_workers,
                                                   config.queue_size, &s->metrics_);
  runtime::Admission::Limits limits;
  limits.max_units = config.max_passes_in_flight;
  limits.max_bytes = config.max_memory_bytes;
  limits.client_share = config.client_share;
  limits.max_per_connection = config.max_passes_per_connection;
  limits.max_waiting = static_cast<size_t>(config.queue_size);
  limits.max_wait = absl::Seconds(config.admission_wait_seconds);
  s->admission_ = std::make_unique<runtime::Admission>(limits, s->timers_.get());
  s->ctx_.config = config;
  s->ctx_.pool = s->pool_.get();
  s->ctx_.admission = s->admission_.get();
  s->ctx_.timers = s->timers_.get();
  // After a second with nothing admitted (no pass, Compare or audit in
  // flight), the heap's free pages go back to the OS (on a worker: trimming
  // is work), so memory falls back after a burst.
  runtime::WorkerPool* pool = s->pool_.get();
  runtime::Admission* admission = s->admission_.get();
  s->idle_trim_ = std::make_unique<runtime::IdleTrim>(
      absl::Seconds(1), s->timers_.get(), [admission] { return admission->units() == 0; },
      [pool] { (void)pool->Submit(runtime::Lane::kStep, [] { malloc_trim(0); }); });
  runtime::IdleTrim* trim = s->idle_trim_.get();
  s->admission_->SetOnIdle([trim] { trim->Idle(); });
  s->ctx_.metrics = &s->metrics_;
  // Monitoring and the stored baselines (a data dir that cannot be used, or a
  // corrupt baseline file, stops the start here, naming the path).
  absl::StatusOr<std::unique_ptr<session::Monitor>> monitor = session::Monitor::Create(config);
  if (!monitor.ok()) return monitor.status();
  s->monitor_ = *std::move(monitor);
  s->ctx_.monitor = s->monitor_.get();
  Server* self = s.get();
  if (!config.monitor_models.empty()) {
    s->metrics_.SetMonitorSource([self] { return self->monitor_->Figures(); });
  }
  s->metrics_.SetLiveSource([self] {
    runtime::LiveFigures f;
    f.passes_in_flight = self->admission_->units();
    f.admission_waiting = self->admission_->waiting();
    f.memory_reserved = self->admission_->bytes();
    f.memory_capacity = self->admission_->capacity();
    f.passes_limit = self->ctx_.config.max_passes_in_flight;
    f.queue_capacity = self->ctx_.config.queue_size;
    f.queue_step = static_cast<int64_t>(self->pool_->queued(runtime::Lane::kStep));
    f.queue_long = static_cast<int64_t>(self->pool_->queued(runtime::Lane::kLong));
    f.queue_new = static_cast<int64_t>(self->pool_->queued(runtime::Lane::kNew));
    f.open_connections = self->admission_->connections();
    return f;
  });

  const runtime::SecurityConfig& t = config.security;
  if (t.tls()) {
    absl::StatusOr<std::unique_ptr<WatchedTlsFiles>> files = WatchedTlsFiles::Open(
        {t.tls_cert, t.tls_key, t.tls_client_ca, "--tls-cert", "--tls-key", "--tls-client-ca"});
    if (!files.ok()) return files.status();
    s->grpc_tls_ = *std::move(files);
    absl::StatusOr<std::unique_ptr<GrpcTlsFiles>> published = GrpcTlsFiles::Create(*s->grpc_tls_->current());
    if (!published.ok()) return published.status();
    s->grpc_tls_published_ = *std::move(published);
  }
  if (t.tokens()) {
    absl::StatusOr<std::unique_ptr<runtime::TokenStore>> tokens = runtime::TokenStore::Open(t.token_file);
    if (!tokens.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--token-file ", tokens.status().message()));
    }
    s->tokens_ = *std::move(tokens);
  }
  s->auth_ = std::make_unique<Authenticator>(t, s->tokens_.get());
  s->ctx_.auth = s->auth_.get();

  if (!config.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint = MetricsEndpoint::Start(config, &s->metrics_);
    if (!endpoint.ok()) return endpoint.status();
    s->metrics_endpoint_ = *std::move(endpoint);
    s->metrics_port_ = s->metrics_endpoint_->port();
  }

  // Links the health service's descriptor into the generated pool, so
  // reflection can describe grpc.health.v1.Health to generic tools.
  (void)grpc::health::v1::HealthCheckResponse::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  s->service_ = std::make_unique<AttnrollServiceImpl>(&s->ctx_);
  grpc::ServerBuilder builder;
  s->ports_.assign(config.listen.size(), 0);
  // The processor refuses reflection and unknown methods without a token;
  // it is needed (and only possible) with TLS or local credentials.
  const std::shared_ptr<grpc::ServerCredentials> credentials = ListenCredentials(
      s->grpc_tls_published_.get(), t.tokens() ? MakeAuthProcessor(s->auth_.get(), &s->metrics_) : nullptr);
  for (size_t i = 0; i < config.listen.size(); ++i) {
    builder.AddListeningPort(config.listen[i], credentials, &s->ports_[i]);
  }
  builder.RegisterService(s->service_.get());
  ApplyConnectionLimits(config, builder);
  s->server_ = builder.BuildAndStart();
  for (size_t i = 0; i < config.listen.size(); ++i) {
    if (s->server_ == nullptr || s->ports_[i] == 0) {
      return absl::UnavailableError(absl::StrCat("grpc: cannot listen on ", config.listen[i]));
    }
  }
  auto* health = s->server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(v1::AttnrollService::service_full_name(), true);
  LogSecurity(config, s->grpc_tls_.get(), s->tokens_.get(), s->metrics_endpoint_.get());
  if (t.tls() || t.tokens() || t.metrics_tls()) {
    s->reloader_ = std::make_unique<runtime::Periodic>(absl::Seconds(t.tls_reload_seconds),
                                                       [self] { self->Reload(); });
  }
  return s;
}

void Server::Reload() {
  absl::MutexLock lock(&reload_mu_);
  using runtime::Log;
  using runtime::LogLevel;
  std::string error;
  if (tokens_ != nullptr) {
    switch (tokens_->ReloadIfChanged(&error)) {
      case runtime::TokenStore::Reload::kUnchanged: break;
      case runtime::TokenStore::Reload::kReloaded: {
        const auto table = tokens_->table();
        Log(LogLevel::kInfo, "tokens reloaded",
            {{"file", tokens_->path()}, {"tokens", table->size()},
             {"names", absl::StrJoin(table->names(), ",")}});
        break;
      }
      case runtime::TokenStore::Reload::kFailed:
        Log(LogLevel::kError, "tokens not reloaded, the previous tokens stay in use",
            {{"message", error}});
        break;
    }
  }
  if (grpc_tls_ != nullptr) {
    switch (grpc_tls_->ReloadIfChanged(&error)) {
      case WatchedTlsFiles::Reload::kUnchanged: break;
      case WatchedTlsFiles::Reload::kReloaded: {
        // gRPC's watcher takes it for new connections within a second.
        const auto m = grpc_tls_->current();
        if (absl::Status s = grpc_tls_published_->Publish(*m); !s.ok()) {
          Log(LogLevel::kError, "tls: gRPC port certificate not handed to gRPC", {{"message", s.message()}});
          break;
        }
        Log(LogLevel::kInfo, "tls: gRPC port certificate reloaded", {{"certificate", m->Describe()}});
        break;
      }
      case WatchedTlsFiles::Reload::kFailed:
        Log(LogLevel::kError, "tls: gRPC port files not reloaded, the previous ones stay in use",
            {{"message", error}});
        break;
    }
  }
  if (metrics_endpoint_ != nullptr) metrics_endpoint_->ReloadIfChanged();
}

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  const absl::Time deadline = absl::Now() + grace;
  // 1. Refuse new work; say NOT_SERVING while the port stays open.
  ctx_.shutting_down = true;
  admission_->Shutdown();
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(v1::AttnrollService::service_full_name(), false);
  // 2. Passes in flight get the grace period to finish.
  while (admission_->units() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  // 3. Stop: what is left is cancelled; health Watch streams end.
  health->Shutdown();
  server_->Shutdown(absl::ToChronoTime(std::max(absl::Now(), deadline)));
  server_->Wait();
}

void Server::StopMetricsEndpoint() {
  // The gauges read the pool and admission, which go next: from here on a
  // scrape (one in progress finishes first) gets no live figures.
  metrics_.SetLiveSource(nullptr);
  // The file checker reloads the endpoint's certificate: it stops first.
  reloader_.reset();
  if (metrics_endpoint_ == nullptr) return;
  // civetweb's listening thread sees the stop only when its poll of the
  // listening socket returns, which without a connection takes up to 2 s:
  // connections closed at once (a worker reads their end and drops them)
  // wake it.
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    metrics_endpoint_.reset();
    stopped = true;
  });
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (!stopped.load() && absl::Now() < until) {
    Poke(ctx_.config.metrics_listen, metrics_port_);
    absl::SleepFor(absl::Milliseconds(5));
  }
  stopper.join();
}

void Server::StopForExit() {
  metrics_.SetLiveSource(nullptr);
  metrics_.SetMonitorSource(nullptr);
  reloader_.reset();
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
  server_.reset();
  if (idle_trim_ != nullptr) idle_trim_->Stop();  // its trim submits to the pool
  pool_.reset();
  // Never stopped: see the header.
  (void)metrics_endpoint_.release();
}

Server::~Server() {
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
  StopMetricsEndpoint();
  server_.reset();
  if (idle_trim_ != nullptr) idle_trim_->Stop();  // its trim submits to the pool
  pool_.reset();  // runs queued tasks (they see cancelled calls) and joins
  if (admission_ != nullptr) admission_->SetOnIdle(nullptr);  // idle_trim_ goes first
}

}  // namespace attnroll::rpc
