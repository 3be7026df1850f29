#include "server/rpc/explain_reactor.h"

#include "proto/cpp/grpc_status.h"
#include "server/rpc/proto_io.h"
#include "server/runtime/refusal.h"

namespace attnroll::rpc {

ExplainReactor::ExplainReactor(grpc::CallbackServerContext* call, grpc::ByteBuffer* response,
                               ServiceContext* ctx)
    : call_(call), response_(response), ctx_(ctx), state_(ctx, call, "Explain") {
  if (!state_.authenticated().ok()) {
    End(state_.authenticated());
    return;
  }
  if (ctx_->shutting_down.load()) {
    End(runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down, not accepting new passes"));
    return;
  }
  ReadNext();
}

void ExplainReactor::ReadNext() {
  state_.ArmIdle(state_.idle_timeout());
  StartRead(&buffer_);
}

void ExplainReactor::OnReadDone(bool ok) {
  const Reaction reaction = TookRead();
  state_.DisarmIdle();
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;  // a read ahead of a step that ended the call
    if (busy_) {         // read ahead: the step in progress takes it on
      pending_ = true;
      pending_ok_ = ok;
      return;
    }
    busy_ = true;
  }
  Dispatch(ok);
}

void ExplainReactor::StepDone() {
  bool ok;
  {
    absl::MutexLock lock(&mu_);
    if (!pending_) {
      busy_ = false;
      return;
    }
    pending_ = false;
    ok = pending_ok_;
  }
  Dispatch(ok);
}

void ExplainReactor::Dispatch(bool ok) {
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the pass"));
  if (!ok) {
    if (!pass_.open()) {
      return End(absl::InvalidArgumentError(
          "header: expected a PassHeader as the first message, the stream ended without one"));
    }
    return Submit(pass_.session->long_finish() ? runtime::Lane::kLong : runtime::Lane::kStep,
                  &ExplainReactor::Complete);
  }
  ++messages_;
  if (whole_pass_) {
    return End(absl::InvalidArgumentError(absl::StrCat(
        "message ", messages_, ": expected the end of the call after a whole_pass, got another message")));
  }
  // The first message would open a pass: new work, bounded. Later ones
  // belong to an admitted pass: steps, never refused.
  Submit(pass_.open() ? runtime::Lane::kStep : runtime::Lane::kNew, &ExplainReactor::HandleMessage);
}

void ExplainReactor::Submit(runtime::Lane lane, void (ExplainReactor::*step)()) {
  if (absl::Status s = ctx_->pool->Submit(lane, [this, step] { (this->*step)(); }); !s.ok()) End(s);
}

void ExplainReactor::HandleMessage() {
  // Deadlines and cancellation stop the pass between messages.
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the pass"));
  const size_t received = buffer_.Length();
  if (absl::Status s = ParseMessage(buffer_, messages_, "ExplainRequest", &request_); !s.ok()) return End(s);
  switch (request_.message_case()) {
    case v1::ExplainRequest::kHeader:
      if (pass_.open()) {
        return End(absl::InvalidArgumentError(
            "header: duplicate: a PassHeader was already received on this stream"));
      }
      state_.SetRequestId(request_.header().request_id());
      // Admission may wait for room; the next read starts once the pass is open.
      return OpenPassAsync(*ctx_, request_.header(), state_.rpc(), state_.Request(1, "the pass"),
                           [this](absl::StatusOr<OpenPass> pass) { Opened(std::move(pass)); });
    case v1::ExplainRequest::kLayer:
    case v1::ExplainRequest::kLayers: {
      // One layer message, or several in one (each handled as if it came alone).
      const bool one = request_.has_layer();
      if (!pass_.open()) {
        return End(absl::InvalidArgumentError(absl::StrCat(
            "header: expected a PassHeader as the first message, got ", one ? "a layer" : "layers")));
      }
      if (!one && request_.layers().layers().empty()) {
        return End(absl::InvalidArgumentError(
            absl::StrCat("layers (message ", messages_, "): expected at least one layer message, got none")));
      }
      // The message is parsed (buffer_ is free): read the next one while
      // this one is folded in. This step still owns the call (busy_), so
      // the call cannot end under it.
      ReadNext();
      if (one) {
        if (absl::Status s = AddChunk(*ctx_, pass_, request_.layer()); !s.ok()) return End(s);
        break;
      }
      for (const v1::LayerChunk& chunk : request_.layers().layers()) {
        if (absl::Status s = AddChunk(*ctx_, pass_, chunk); !s.ok()) return End(s);
      }
      break;
    }
    case v1::ExplainRequest::kWholePass: {
      if (pass_.open()) {
        return End(absl::InvalidArgumentError(absl::StrCat(
            "whole_pass (message ", messages_, "): expected the only message of the call, "
            "got it after a header")));
      }
      state_.SetRequestId(request_.whole_pass().header().request_id());
      // The parsed message is held until Opened has added its layers: it
      // counts against the memory budget with the pass's working memory.
      runtime::Admission::Request who = state_.Request(1, "the pass");
      who.bytes = static_cast<int64_t>(received);
      return OpenPassAsync(*ctx_, request_.whole_pass().header(), state_.rpc(), std::move(who),
                           [this](absl::StatusOr<OpenPass> pass) { Opened(std::move(pass)); });
    }
    default:
      return End(absl::InvalidArgumentError(absl::StrCat(
          "message ", messages_, ": expected a header, a layer, layers or a whole_pass, got none of them")));
  }
  request_.Clear();
  StepDone();  // the last use of `this` in this task
}

void ExplainReactor::Opened(absl::StatusOr<OpenPass> pass) {
  if (!pass.ok()) return End(pass.status());
  pass_ = *std::move(pass);
  if (request_.has_whole_pass()) {
    whole_pass_ = true;
    for (const v1::LayerChunk& chunk : request_.whole_pass().layers()) {
      if (call_->IsCancelled()) return End(state_.CancelledStatus("the pass"));
      if (absl::Status s = AddChunk(*ctx_, pass_, chunk); !s.ok()) return End(s);
    }
  }
  request_.Clear();
  {
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
  ReadNext();
}

void ExplainReactor::Complete() {
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the pass"));
  absl::StatusOr<v1::ExplainResponse> response = pass_.session->Finish(MakeFinishContext(*ctx_, call_));
  if (!response.ok()) return End(response.status());
  // The pass's whole worker time (every layer message and the finish), as
  // the response reports it and as ExplainStream and ExplainPair count it.
  ctx_->metrics->Compute(pass_.session->kind(), response->timing().compute_seconds());
  FoldMonitored(*ctx_, pass_, &*response);
  SerializeMessage(*response, response_);
  End(absl::OkStatus());
}

void ExplainReactor::End(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
  }
  // The call's end is counted first, then the pass's memory is freed, before
  // the response goes out: whoever sees the memory back (or the status)
  // finds the call counted.
  state_.Ended(status);
  ClosePass(*ctx_, pass_, state_.rpc(), status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::rpc
