// Explain: one pass per call (header, layers, half-close -> one response).
// Every message is handled on the worker pool; the next read starts only when
// the previous message is done, so messages stay in order and gRPC flow
// control pushes back on a sender that outruns the workers.
#ifndef ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_
#define ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/service_context.h"

namespace attnroll::rpc {

class ExplainReactor : public grpc::ServerReadReactor<v1::ExplainRequest> {
 public:
  ExplainReactor(grpc::CallbackServerContext* call, v1::ExplainResponse* response,
                 ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void Submit(void (ExplainReactor::*step)());
  void HandleMessage();  // worker
  void Complete();       // worker
  void End(const absl::Status& status);

  grpc::CallbackServerContext* call_;
  v1::ExplainResponse* response_;
  ServiceContext* ctx_;
  v1::ExplainRequest request_;
  OpenPass pass_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_
