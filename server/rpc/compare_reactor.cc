#include "server/rpc/compare_reactor.h"

#include "proto/cpp/grpc_status.h"
#include "server/session/compare_request.h"

namespace attnroll::rpc {

CompareReactor::CompareReactor(grpc::CallbackServerContext* call, const v1::CompareRequest* request,
                               v1::CompareResponse* response, ServiceContext* ctx)
    : call_(call), request_(request), response_(response), ctx_(ctx) {
  if (absl::Status s = ctx_->pool->Submit([this] { Run(); }); !s.ok()) End(s);
}

void CompareReactor::Run() {
  if (call_->IsCancelled()) return End(absl::CancelledError("comparison cancelled"));
  absl::StatusOr<int64_t> bytes = session::CompareWorkingBytes(*request_, ctx_->config.limits);
  if (!bytes.ok()) return End(bytes.status());
  runtime::MemoryBudget::Reservation reservation;
  if (absl::Status s = ReserveMemory(*ctx_, *bytes, "the comparison", &reservation); !s.ok()) {
    return End(s);
  }
  absl::StatusOr<v1::CompareResponse> result = session::RunCompare(*request_, ctx_->config.limits);
  ReleaseMemory(*ctx_, reservation);
  if (result.ok()) *response_ = std::move(*result);
  End(result.status());
}

void CompareReactor::End(const absl::Status& status) { Finish(ToGrpcStatus(status)); }

}  // namespace attnroll::rpc
