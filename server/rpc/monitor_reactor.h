// Monitor, PinBaseline, ListBaselines, RemoveBaseline: one request, one
// response, handled by session::Monitor. Like Compare, the request is parsed
// and handled on a worker (new work, bounded by the queue), never on the gRPC
// thread: Monitor computes EMDs and PinBaseline writes and flushes a file.
#ifndef ATTNROLL_SERVER_RPC_MONITOR_REACTOR_H_
#define ATTNROLL_SERVER_RPC_MONITOR_REACTOR_H_

#include <functional>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "proto/cpp/grpc_status.h"
#include "server/rpc/call_state.h"
#include "server/rpc/proto_io.h"
#include "server/rpc/service_context.h"
#include "server/runtime/refusal.h"

namespace attnroll::rpc {

template <typename Request, typename Response>
class MonitorReactor : public grpc::ServerUnaryReactor {
 public:
  using Handler = std::function<absl::StatusOr<Response>(const Request&)>;

  // `rpc`: the method's name (metrics, logs); `what`: the request's type name.
  MonitorReactor(grpc::CallbackServerContext* call, const grpc::ByteBuffer* request,
                 grpc::ByteBuffer* response, ServiceContext* ctx, const char* rpc, const char* what,
                 Handler handler)
      : call_(call),
        request_bytes_(const_cast<grpc::ByteBuffer*>(request)),
        response_(response),
        ctx_(ctx),
        state_(ctx, call, rpc),
        what_(what),
        handler_(std::move(handler)) {
    if (ctx_->shutting_down.load()) {
      End(runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down, not accepting new calls"));
      return;
    }
    if (absl::Status s = ctx_->pool->Submit(runtime::Lane::kNew, [this] { Run(); }); !s.ok()) End(s);
  }

  void OnDone() override { delete this; }

 private:
  void Run() {
    if (call_->IsCancelled()) return End(state_.CancelledStatus("the call"));
    Request request;
    if (absl::Status s = ParseMessage(*request_bytes_, 1, what_, &request); !s.ok()) return End(s);
    absl::StatusOr<Response> result = handler_(request);
    if (result.ok()) SerializeMessage(*result, response_);
    End(result.status());
  }

  void End(const absl::Status& status) {
    state_.Ended(status);
    Finish(ToGrpcStatus(status));
  }

  grpc::CallbackServerContext* call_;
  grpc::ByteBuffer* request_bytes_;
  grpc::ByteBuffer* response_;
  ServiceContext* ctx_;
  CallState state_;
  const char* what_;
  Handler handler_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_MONITOR_REACTOR_H_
