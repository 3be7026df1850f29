#include "server/service/explain_reactor.h"

#include "absl/strings/str_cat.h"
#include "server/service/status_util.h"

namespace attnroll::service {

ExplainReactor::ExplainReactor(grpc::CallbackServerContext* call, v1::ExplainResponse* response,
                               ServiceContext* ctx)
    : call_(call), response_(response), ctx_(ctx) {
  StartRead(&request_);
}

void ExplainReactor::OnReadDone(bool ok) {
  if (call_->IsCancelled()) return End(absl::CancelledError("pass cancelled"));
  if (!ok) {
    if (pass_.session == nullptr) {
      return End(absl::InvalidArgumentError(
          "header: expected a PassHeader as the first message, the stream ended without one"));
    }
    return Submit(&ExplainReactor::Complete);
  }
  Submit(&ExplainReactor::HandleMessage);
}

void ExplainReactor::Submit(void (ExplainReactor::*step)()) {
  if (!ctx_->pool->TrySubmit([this, step] { (this->*step)(); })) {
    ctx_->metrics->QueueRejected();
    return End(absl::ResourceExhaustedError(absl::StrCat(
        "server: worker queue full (", ctx_->pool->max_queued(), " tasks waiting); retry later")));
  }
  ctx_->metrics->SetQueueDepth(ctx_->pool->queued());
}

void ExplainReactor::HandleMessage() {
  // Deadlines and cancellation stop the pass between messages.
  if (call_->IsCancelled()) return End(absl::CancelledError("pass cancelled"));
  switch (request_.message_case()) {
    case v1::ExplainRequest::kHeader: {
      if (pass_.session != nullptr) {
        return End(absl::InvalidArgumentError(
            "header: duplicate: a PassHeader was already received on this stream"));
      }
      absl::StatusOr<OpenPass> pass = OpenPassFromHeader(*ctx_, request_.header());
      if (!pass.ok()) return End(pass.status());
      pass_ = std::move(*pass);
      break;
    }
    case v1::ExplainRequest::kLayer: {
      if (pass_.session == nullptr) {
        return End(absl::InvalidArgumentError(
            "header: expected a PassHeader as the first message, got a layer"));
      }
      ctx_->metrics->AttentionBytes(request_.layer().attention().data().size());
      if (absl::Status s = pass_.session->AddChunk(request_.layer()); !s.ok()) return End(s);
      break;
    }
    default:
      return End(absl::InvalidArgumentError("message: expected a header or a layer, got neither"));
  }
  request_.Clear();
  StartRead(&request_);  // the last use of `this` in this task
}

void ExplainReactor::Complete() {
  if (call_->IsCancelled()) return End(absl::CancelledError("pass cancelled"));
  FinishContext finish;
  finish.pool = ctx_->pool;
  finish.helpers = ctx_->pool->num_threads() - 1;
  finish.cancelled = [call = call_] { return call->IsCancelled(); };
  absl::StatusOr<v1::ExplainResponse> response = pass_.session->Finish(finish);
  if (!response.ok()) return End(response.status());
  *response_ = std::move(*response);
  End(absl::OkStatus());
}

void ExplainReactor::End(const absl::Status& status) {
  // Free the pass's memory before the response goes out.
  ClosePass(*ctx_, pass_, "Explain", status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::service
