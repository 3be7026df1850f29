// ExplainStream: many passes multiplexed by request_id on one bidi stream.
// A failed pass gets a PassError in-band and the others go on. Messages are
// parsed and handled one at a time on the worker pool, in order (the first
// as new work, the rest as steps); a header waits for admission before the
// next message is read; reading pauses while too many responses wait for
// the client. A pass with no message for the idle timeout is failed (idle);
// a stream with nothing arriving at all is cancelled.
#ifndef ATTNROLL_SERVER_RPC_STREAM_REACTOR_H_
#define ATTNROLL_SERVER_RPC_STREAM_REACTOR_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/call_state.h"
#include "server/rpc/service_context.h"
#include "server/rpc/tsan_handoff.h"
#include "server/rpc/write_queue.h"

namespace attnroll::rpc {

class StreamReactor : public HandOffs<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>> {
 public:
  StreamReactor(grpc::CallbackServerContext* call, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override {
    TookAll();
    delete this;
  }

 private:
  struct Open {
    OpenPass pass;
    absl::Time last_message;  // for the per-pass idle timeout
  };

  void HandleMessage();  // worker
  // Handles request_; false when the next read is started later (admission).
  bool HandleOne();
  void Opened(const std::string& id, absl::StatusOr<OpenPass> pass);  // worker
  void ExpireIdlePasses();
  void StreamEnded();  // worker: no more reads
  void FailPass(const std::string& id, const absl::Status& status);
  void EndPass(const std::string& id, const absl::Status& status);
  void Enqueue(const v1::StreamResponse& response);
  void ReadNextOrPause();
  void StartReading();
  void MaybeFinish();

  grpc::CallbackServerContext* call_;
  ServiceContext* ctx_;
  CallState state_;
  grpc::ByteBuffer buffer_;
  v1::StreamRequest request_;
  int64_t messages_ = 0;
  // Touched by one worker task at a time (the next read starts after it).
  std::map<std::string, Open> passes_;
  std::set<std::string> failed_;  // ids whose remaining messages are dropped

  absl::Mutex mu_;
  WriteQueue<grpc::ByteBuffer> writes_ ABSL_GUARDED_BY(mu_);
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);  // a malformed message ends the stream
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_STREAM_REACTOR_H_
