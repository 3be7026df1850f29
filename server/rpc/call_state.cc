#include "server/rpc/call_state.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/runtime/logging.h"
#include "server/runtime/refusal.h"

namespace attnroll::rpc {

CallState::CallState(ServiceContext* ctx, grpc::CallbackServerContext* call, const char* rpc,
                     Access access)
    : ctx_(ctx), call_(call), rpc_(rpc), started_(absl::Now()) {
  connection_ = call->peer();
  const std::shared_ptr<const grpc::AuthContext> auth =
      ctx->auth->reads_certificates() ? call->auth_context() : nullptr;
  Authentication a = ctx->auth->Check(access, call->client_metadata(), auth.get(), connection_);
  authenticated_ = std::move(a.status);
  client_ = std::move(a.identity.name);
  label_ = std::move(a.identity.label);
}

CallState::~CallState() { DisarmIdle(); }

runtime::Admission::Request CallState::Request(int units, const char* what) const {
  runtime::Admission::Request r;
  r.client = client_;
  r.connection = connection_;
  r.units = units;
  r.what = what;
  return r;
}

void CallState::ArmIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (idle_timer_ != 0) return;
  idle_timer_ = ctx_->timers->Schedule(absl::Now() + timeout, [this] {
    idle_fired_ = true;
    call_->TryCancel();
  });
}

void CallState::DisarmIdle() {
  runtime::Timers::Id id;
  {
    absl::MutexLock lock(&mu_);
    id = idle_timer_;
    idle_timer_ = 0;
  }
  if (id != 0) ctx_->timers->Cancel(id);
}

absl::Duration CallState::idle_timeout() const {
  return absl::Seconds(ctx_->config.idle_timeout_seconds);
}

absl::Duration CallState::stream_idle_timeout() const {
  return absl::Seconds(ctx_->config.stream_idle_timeout_seconds);
}

absl::Status CallState::CancelledStatus(absl::string_view what) const {
  if (idle_fired_.load()) {
    return runtime::Refused(runtime::Refusal::kIdle,
                            absl::StrFormat("idle: nothing arrived for %g s (idle_timeout_seconds); %s ended",
                                            ctx_->config.idle_timeout_seconds, what));
  }
  if (absl::FromChrono(call_->deadline()) <= absl::Now()) {
    return absl::DeadlineExceededError(absl::StrCat(what, ": the call's deadline passed"));
  }
  return absl::CancelledError(absl::StrCat(what, " cancelled"));
}

void CallState::Ended(const absl::Status& status) {
  if (ended_.exchange(true)) return;
  ctx_->metrics->CallFinished(rpc_, status.code(), absl::ToDoubleSeconds(absl::Now() - started_));
  ctx_->metrics->ClientCallFinished(label_, status.code());
  if (const std::optional<runtime::Refusal> why = runtime::RefusalOf(status)) {
    ctx_->metrics->Refused(*why);
  }
  if (!status.ok()) PassFailed(request_id_, status);
}

void CallState::PassFailed(const std::string& request_id, const absl::Status& status) const {
  // Refusals are the operator's business (warning); a client's own errors
  // and cancellations are facts (info); anything else is ours (error).
  const std::optional<runtime::Refusal> why = runtime::RefusalOf(status);
  runtime::LogLevel level = runtime::LogLevel::kInfo;
  if (why.has_value()) level = runtime::LogLevel::kWarning;
  if (status.code() == absl::StatusCode::kInternal || status.code() == absl::StatusCode::kUnknown ||
      status.code() == absl::StatusCode::kDataLoss) {
    level = runtime::LogLevel::kError;
  }
  if (!runtime::LogEnabled(level)) return;
  const std::string code = absl::StatusCodeToString(status.code());
  runtime::Log(level, why.has_value() ? "refused" : "failed",
               {{"rpc", rpc_},
                {"request_id", request_id},
                {"client", client_},
                {"status", code},
                {"reason", why.has_value() ? runtime::RefusalName(*why) : ""},
                {"message", status.message()}});
}

}  // namespace attnroll::rpc
