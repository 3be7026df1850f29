// ExplainPair: one input under two models. Two passes opened from the same
// header; every layer message goes, on the worker pool, to its side; after
// half-close both are finished and the first analysis's maps compared.
#ifndef ATTNROLL_SERVER_RPC_PAIR_REACTOR_H_
#define ATTNROLL_SERVER_RPC_PAIR_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/service_context.h"

namespace attnroll::rpc {

class PairReactor : public grpc::ServerReadReactor<v1::PairRequest> {
 public:
  PairReactor(grpc::CallbackServerContext* call, v1::PairResponse* response, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void Submit(void (PairReactor::*step)());
  void HandleMessage();  // worker
  void Complete();       // worker
  void End(const absl::Status& status);

  grpc::CallbackServerContext* call_;
  v1::PairResponse* response_;
  ServiceContext* ctx_;
  v1::PairRequest request_;
  v1::CompareOptions compare_;
  OpenPass baseline_, candidate_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_PAIR_REACTOR_H_
