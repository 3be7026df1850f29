// Compare: one request, one response. Parsing, validation, the cost check,
// admission (the comparison's working memory) and the comparison itself all
// run on workers, never on the gRPC thread; a large comparison runs on the
// long lane and stops when the call is cancelled.
#ifndef ATTNROLL_SERVER_RPC_COMPARE_REACTOR_H_
#define ATTNROLL_SERVER_RPC_COMPARE_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "attnroll/v1/audit.pb.h"
#include "server/rpc/call_state.h"
#include "server/rpc/service_context.h"
#include "server/rpc/tsan_handoff.h"

namespace attnroll::rpc {

class CompareReactor : public HandOffs<grpc::ServerUnaryReactor> {
 public:
  CompareReactor(grpc::CallbackServerContext* call, grpc::ByteBuffer* request,
                 grpc::ByteBuffer* response, ServiceContext* ctx);

  void OnDone() override {
    TookAll();
    delete this;
  }

 private:
  void Open();  // worker
  void Admitted(absl::StatusOr<runtime::Admission::Ticket> ticket);
  void Run();   // worker
  void End(const absl::Status& status);

  grpc::CallbackServerContext* call_;
  grpc::ByteBuffer* request_bytes_;
  grpc::ByteBuffer* response_;
  ServiceContext* ctx_;
  CallState state_;
  v1::CompareRequest request_;
  runtime::Admission::Ticket ticket_;
  bool long_ = false;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_COMPARE_REACTOR_H_
