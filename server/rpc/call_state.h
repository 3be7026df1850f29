// What every reactor does for its call in the same way: who the call is for
// (its client identity, checked by rpc::Authenticator, and connection), how
// long it may stay idle, and how it ends: the one place where a call's status
// is recorded (rpcs_total, duration, the refusal reason, the caller's label)
// before it goes out.
#ifndef ATTNROLL_SERVER_RPC_CALL_STATE_H_
#define ATTNROLL_SERVER_RPC_CALL_STATE_H_

#include <atomic>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/rpc/auth.h"
#include "server/rpc/service_context.h"
#include "server/runtime/admission.h"
#include "server/runtime/timers.h"

namespace attnroll::rpc {

class CallState {
 public:
  // Checks the caller (see rpc/auth.h) for a method of `access`.
  CallState(ServiceContext* ctx, grpc::CallbackServerContext* call, const char* rpc,
            Access access = Access::kWork);
  ~CallState();  // disarms the idle timer (waits for it if it is running)
  CallState(const CallState&) = delete;
  CallState& operator=(const CallState&) = delete;

  const std::string& rpc() const { return rpc_; }
  // OK, or the UNAUTHENTICATED refusal to end the call with before reading
  // anything.
  const absl::Status& authenticated() const { return authenticated_; }
  // For admission and logs: the caller's identity (a token's name, "cn:" +
  // a client certificate's CN, or the peer's address without its port), and
  // the peer with its port (one connection).
  const std::string& client() const { return client_; }
  const std::string& connection() const { return connection_; }
  // An admission request of `units` passes for this call.
  runtime::Admission::Request Request(int units, const char* what) const;

  // Arms the idle timer before a read: if nothing arrives within `timeout`,
  // the call is cancelled and ends as an idle refusal. Disarm when the read
  // is done. At most one armed at a time.
  void ArmIdle(absl::Duration timeout);
  void DisarmIdle();
  // The idle timeout for a call that holds a pass (or has sent nothing yet),
  // and for a stream with nothing open.
  absl::Duration idle_timeout() const;
  absl::Duration stream_idle_timeout() const;

  // The status of a call gRPC cancelled: DEADLINE_EXCEEDED when the client's
  // deadline passed or the idle timer fired (then an idle refusal), else
  // CANCELLED. `what` names what was cut short.
  absl::Status CancelledStatus(absl::string_view what) const;

  // The pass the call carries (Explain, ExplainPair), for the log.
  void SetRequestId(const std::string& id) { request_id_ = id; }

  // Records how the call ends (once): its code, duration and refusal reason,
  // and a log line when it failed.
  void Ended(const absl::Status& status);
  // A pass of a multiplexed stream that failed (in-band): one log line.
  void PassFailed(const std::string& request_id, const absl::Status& status) const;

 private:
  ServiceContext* ctx_;
  grpc::CallbackServerContext* call_;
  const std::string rpc_;
  std::string client_, connection_;
  std::string label_;  // the caller's bounded metrics label
  absl::Status authenticated_;
  std::string request_id_;
  const absl::Time started_;
  std::atomic<bool> idle_fired_{false};
  std::atomic<bool> ended_{false};
  absl::Mutex mu_;
  runtime::Timers::Id idle_timer_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_CALL_STATE_H_
