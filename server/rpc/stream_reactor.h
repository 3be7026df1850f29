// ExplainStream: many passes multiplexed by request_id on one bidi stream.
// A failed pass gets a PassError in-band and the others go on. Messages are
// handled one at a time on the worker pool, in order; reading pauses while
// too many responses wait for the client to take them.
#ifndef ATTNROLL_SERVER_RPC_STREAM_REACTOR_H_
#define ATTNROLL_SERVER_RPC_STREAM_REACTOR_H_

#include <map>
#include <set>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/service_context.h"
#include "server/rpc/write_queue.h"

namespace attnroll::rpc {

class StreamReactor : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse> {
 public:
  StreamReactor(grpc::CallbackServerContext* call, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void HandleMessage();  // worker
  void HandleOne();      // worker: may queue one response
  void FailPass(const std::string& id, const absl::Status& status);
  void EndPass(const std::string& id, const absl::Status& status);
  void Enqueue(v1::StreamResponse response);
  void ReadNextOrPause();
  void MaybeFinish();

  grpc::CallbackServerContext* call_;
  ServiceContext* ctx_;
  v1::StreamRequest request_;
  // Touched by one worker task at a time (the next read starts after it).
  std::map<std::string, OpenPass> passes_;
  std::set<std::string> failed_;  // ids whose remaining messages are dropped

  absl::Mutex mu_;
  WriteQueue<v1::StreamResponse> writes_ ABSL_GUARDED_BY(mu_);
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_STREAM_REACTOR_H_
