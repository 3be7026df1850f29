// The AttnrollService callback handlers: each RPC gets its own small reactor.
#ifndef ATTNROLL_SERVER_RPC_ATTNROLL_SERVICE_H_
#define ATTNROLL_SERVER_RPC_ATTNROLL_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "attnroll/v1/attnroll.grpc.pb.h"
#include "server/rpc/service_context.h"

namespace attnroll::rpc {

// What GetServerInfo answers: version, limits, analyses, dtypes.
v1::ServerInfo ServerInfoOf(const runtime::ServerConfig& config);

class AttnrollServiceImpl final : public v1::AttnrollService::CallbackService {
 public:
  explicit AttnrollServiceImpl(ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerReadReactor<v1::ExplainRequest>* Explain(grpc::CallbackServerContext* call,
                                                       v1::ExplainResponse* response) override;
  grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* ExplainStream(
      grpc::CallbackServerContext* call) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* call,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* info) override;
  grpc::ServerReadReactor<v1::PairRequest>* ExplainPair(grpc::CallbackServerContext* call,
                                                       v1::PairResponse* response) override;
  grpc::ServerBidiReactor<v1::AuditRequest, v1::AuditResponse>* Audit(
      grpc::CallbackServerContext* call) override;
  grpc::ServerUnaryReactor* Compare(grpc::CallbackServerContext* call,
                                    const v1::CompareRequest* request,
                                    v1::CompareResponse* response) override;

 private:
  ServiceContext* ctx_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_ATTNROLL_SERVICE_H_
