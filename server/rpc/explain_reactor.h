// Explain: one pass per call (header, layers, half-close -> one response;
// or the whole pass in one message, then half-close).
// Every message is parsed and handled on the worker pool: the first (the
// header) as new work, bounded, then admitted; once admitted, every layer is
// a step that always waits for a worker. Read-ahead: once a layer message is
// parsed, the next read starts while the layer is folded in, so the
// transfer of layer l + 1 overlaps the compute of layer l; a message that
// arrives meanwhile waits (in gRPC's buffers, under its memory quota) until
// the step is done. Messages are handled one at a time and in order, and
// gRPC flow control still pushes back on a sender that outruns the workers
// (at most one message is read ahead).
#ifndef ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_
#define ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_

#include <cstdint>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/call_state.h"
#include "server/rpc/service_context.h"
#include "server/rpc/tsan_handoff.h"

namespace attnroll::rpc {

class ExplainReactor : public HandOffs<grpc::ServerReadReactor<grpc::ByteBuffer>> {
 public:
  ExplainReactor(grpc::CallbackServerContext* call, grpc::ByteBuffer* response, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnDone() override {
    TookAll();
    delete this;
  }

 private:
  void ReadNext();
  // What a completed read leads to (callback thread, or the worker whose
  // step it waited for).
  void Dispatch(bool ok);
  // A step is done: the read that completed meanwhile, if any, goes on.
  void StepDone();
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
  bool whole_pass_ = false;  // the pass came whole: the call must end next
  OpenPass pass_;
  absl::Mutex mu_;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;     // a step owns the call's state
  bool pending_ ABSL_GUARDED_BY(mu_) = false;  // a read completed while busy
  bool pending_ok_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_EXPLAIN_REACTOR_H_
