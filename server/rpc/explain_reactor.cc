#include "server/rpc/explain_reactor.h"

#include "proto/cpp/grpc_status.h"

namespace attnroll::rpc {

ExplainReactor::ExplainReactor(grpc::CallbackServerContext* call, v1::ExplainResponse* response,
                               ServiceContext* ctx)
    : call_(call), response_(response), ctx_(ctx) {
  StartRead(&request_);
}

void ExplainReactor::OnReadDone(bool ok) {
  if (call_->IsCancelled()) return End(absl::CancelledError("pass cancelled"));
  if (!ok) {
    if (!pass_.open()) {
      return End(absl::InvalidArgumentError(
          "header: expected a PassHeader as the first message, the stream ended without one"));
    }
    return Submit(&ExplainReactor::Complete);
  }
  Submit(&ExplainReactor::HandleMessage);
}

void ExplainReactor::Submit(void (ExplainReactor::*step)()) {
  if (absl::Status s = ctx_->pool->Submit([this, step] { (this->*step)(); }); !s.ok()) End(s);
}

void ExplainReactor::HandleMessage() {
  // Deadlines and cancellation stop the pass between messages.
  if (call_->IsCancelled()) return End(absl::CancelledError("pass cancelled"));
  switch (request_.message_case()) {
    case v1::ExplainRequest::kHeader: {
      if (pass_.open()) {
        return End(absl::InvalidArgumentError(
            "header: duplicate: a PassHeader was already received on this stream"));
      }
      absl::StatusOr<OpenPass> pass = OpenPassFromHeader(*ctx_, request_.header());
      if (!pass.ok()) return End(pass.status());
      pass_ = std::move(*pass);
      break;
    }
    case v1::ExplainRequest::kLayer: {
      if (!pass_.open()) {
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
  absl::StatusOr<v1::ExplainResponse> response =
      pass_.session->Finish(MakeFinishContext(*ctx_, call_));
  if (!response.ok()) return End(response.status());
  *response_ = std::move(*response);
  End(absl::OkStatus());
}

void ExplainReactor::End(const absl::Status& status) {
  // Free the pass's memory before the response goes out.
  ClosePass(*ctx_, pass_, "Explain", status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::rpc
