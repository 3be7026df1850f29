#include "server/rpc/compare_reactor.h"

#include "proto/cpp/grpc_status.h"
#include "server/rpc/proto_io.h"
#include "server/runtime/refusal.h"
#include "server/session/compare_request.h"

namespace attnroll::rpc {
namespace {
// Comparisons above this many bytes of working memory run on the long lane.
constexpr int64_t kLongCompareBytes = int64_t{1} << 20;
}  // namespace

CompareReactor::CompareReactor(grpc::CallbackServerContext* call, grpc::ByteBuffer* request,
                               grpc::ByteBuffer* response, ServiceContext* ctx)
    : call_(call), request_bytes_(request), response_(response), ctx_(ctx), state_(ctx, call, "Compare") {
  if (!state_.authenticated().ok()) {
    End(state_.authenticated());
    return;
  }
  if (ctx_->shutting_down.load()) {
    End(runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down, not accepting new calls"));
    return;
  }
  if (absl::Status s = ctx_->pool->Submit(runtime::Lane::kNew, [this] { Open(); }); !s.ok()) End(s);
}

void CompareReactor::Open() {
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the comparison"));
  if (absl::Status s = ParseMessage(*request_bytes_, 1, "CompareRequest", &request_); !s.ok()) return End(s);
  // Validates the request and its cost; its working memory is admitted.
  absl::StatusOr<int64_t> bytes = session::CompareWorkingBytes(request_, ctx_->config.limits);
  if (!bytes.ok()) return End(bytes.status());
  long_ = *bytes > kLongCompareBytes;
  runtime::Admission::Request request = state_.Request(1, "the comparison");
  request.bytes = *bytes;
  ctx_->admission->Admit(std::move(request), [this](absl::StatusOr<runtime::Admission::Ticket> t) {
    Admitted(std::move(t));
  });
}

void CompareReactor::Admitted(absl::StatusOr<runtime::Admission::Ticket> ticket) {
  if (!ticket.ok()) return End(ticket.status());
  ticket_ = *std::move(ticket);
  if (absl::Status s = ctx_->pool->Submit(long_ ? runtime::Lane::kLong : runtime::Lane::kStep,
                                          [this] { Run(); });
      !s.ok()) {
    End(s);
  }
}

void CompareReactor::Run() {
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::CompareResponse> result = session::RunCompare(
      request_, ctx_->config.limits, [call = call_] { return call->IsCancelled(); });
  ctx_->metrics->Compute("compare", absl::ToDoubleSeconds(absl::Now() - start));
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the comparison"));
  if (result.ok()) SerializeMessage(*result, response_);
  End(result.status());
}

void CompareReactor::End(const absl::Status& status) {
  ticket_.Release();
  state_.Ended(status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::rpc
