// ExplainPair: one input under two models. Two passes opened (planned and
// admitted, one after the other) from the same header; every layer message
// goes, on the worker pool, to its side; after half-close both are finished
// and the first analysis's maps compared (that comparison's memory is
// reserved too).
#ifndef ATTNROLL_SERVER_RPC_PAIR_REACTOR_H_
#define ATTNROLL_SERVER_RPC_PAIR_REACTOR_H_

#include <cstdint>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/call_state.h"
#include "server/rpc/service_context.h"
#include "server/rpc/tsan_handoff.h"

namespace attnroll::rpc {

class PairReactor : public HandOffs<grpc::ServerReadReactor<grpc::ByteBuffer>> {
 public:
  PairReactor(grpc::CallbackServerContext* call, grpc::ByteBuffer* response, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnDone() override {
    TookAll();
    delete this;
  }

 private:
  void ReadNext();
  void Submit(runtime::Lane lane, void (PairReactor::*step)());
  void HandleMessage();  // worker
  void Opened(OpenPass* side, absl::StatusOr<OpenPass> pass);  // worker
  void Complete();       // worker
  void End(const absl::Status& status);

  grpc::CallbackServerContext* call_;
  grpc::ByteBuffer* response_;
  ServiceContext* ctx_;
  CallState state_;
  grpc::ByteBuffer buffer_;
  v1::PairRequest request_;
  int64_t messages_ = 0;
  v1::PassHeader header_;
  v1::CompareOptions compare_;
  OpenPass baseline_, candidate_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_PAIR_REACTOR_H_
