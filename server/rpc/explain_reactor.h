// Explain: one pass per call (header, layers, half-close -> one response).
// Every message is parsed and handled on the worker pool: the first (the
// header) as new work, bounded, then admitted; once admitted, every layer is
// a step that always waits for a worker. The next read starts only when the
// previous message is done, so messages stay in order and gRPC flow control
// pushes back on a sender that outruns the workers.
#ifndef ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_
#define ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_

#include <cstdint>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/call_state.h"
#include "server/rpc/service_context.h"

namespace attnroll::rpc {

class ExplainReactor : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  ExplainReactor(grpc::CallbackServerContext* call, grpc::ByteBuffer* response, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void ReadNext();
  void Submit(runtime::Lane lane, void (ExplainReactor::*step)());
  void HandleMessage();  // worker
  void Opened(absl::StatusOr<OpenPass> pass);  // worker
  void Complete();       // worker
  void End(const absl::Status& status);

  grpc::CallbackServerContext* call_;
  grpc::ByteBuffer* response_;
  ServiceContext* ctx_;
  CallState state_;
  grpc::ByteBuffer buffer_;
  v1::ExplainRequest request_;
  int64_t messages_ = 0;
  OpenPass pass_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_
