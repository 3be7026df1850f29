// Compare: one request, one response. Validation, decoding and the metrics
// all run on a worker (the maps can be large and the EMD is not free), never
// on the gRPC thread.
#ifndef ATTNROLL_SERVER_RPC_COMPARE_REACTOR_H_
#define ATTNROLL_SERVER_RPC_COMPARE_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "attnroll/v1/audit.pb.h"
#include "server/rpc/service_context.h"

namespace attnroll::rpc {

class CompareReactor : public grpc::ServerUnaryReactor {
 public:
  CompareReactor(grpc::CallbackServerContext* call, const v1::CompareRequest* request,
                 v1::CompareResponse* response, ServiceContext* ctx);

  void OnDone() override { delete this; }

 private:
  void Run();  // worker
  void End(const absl::Status& status);

  grpc::CallbackServerContext* call_;
  const v1::CompareRequest* request_;
  v1::CompareResponse* response_;
  ServiceContext* ctx_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_COMPARE_REACTOR_H_
