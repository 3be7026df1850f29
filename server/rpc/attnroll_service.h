// The AttnrollService callback handlers: each RPC gets its own small reactor.
// Every method but GetServerInfo is a raw (byte buffer) method: its reactor
// parses the messages itself, on a worker, so a message that does not parse
// is refused by name instead of being taken for the end of a stream.
#ifndef ATTNROLL_SERVER_RPC_ATTNROLL_SERVICE_H_
#define ATTNROLL_SERVER_RPC_ATTNROLL_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "attnroll/v1/attnroll.grpc.pb.h"
#include "server/rpc/service_context.h"

namespace attnroll::rpc {

// What GetServerInfo answers: version, limits, analyses, dtypes.
v1::ServerInfo ServerInfoOf(const runtime::ServerConfig& config);

using RawService = v1::AttnrollService::WithRawCallbackMethod_Explain<
    v1::AttnrollService::WithRawCallbackMethod_ExplainStream<
        v1::AttnrollService::WithCallbackMethod_GetServerInfo<
            v1::AttnrollService::WithRawCallbackMethod_Compare<
                v1::AttnrollService::WithRawCallbackMethod_ExplainPair<
                    v1::AttnrollService::WithRawCallbackMethod_Audit<
                        v1::AttnrollService::WithRawCallbackMethod_Monitor<
                            v1::AttnrollService::WithRawCallbackMethod_PinBaseline<
                                v1::AttnrollService::WithRawCallbackMethod_ListBaselines<
                                    v1::AttnrollService::WithRawCallbackMethod_RemoveBaseline<
                                        v1::AttnrollService::Service>>>>>>>>>>;

class AttnrollServiceImpl final : public RawService {
 public:
  explicit AttnrollServiceImpl(ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerReadReactor<grpc::ByteBuffer>* Explain(grpc::CallbackServerContext* call,
                                                     grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ExplainStream(
      grpc::CallbackServerContext* call) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* call,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* info) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* ExplainPair(grpc::CallbackServerContext* call,
                                                         grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Audit(
      grpc::CallbackServerContext* call) override;
  grpc::ServerUnaryReactor* Compare(grpc::CallbackServerContext* call, const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Monitor(grpc::CallbackServerContext* call, const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PinBaseline(grpc::CallbackServerContext* call, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListBaselines(grpc::CallbackServerContext* call,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RemoveBaseline(grpc::CallbackServerContext* call,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;

 private:
  ServiceContext* ctx_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_ATTNROLL_SERVICE_H_
