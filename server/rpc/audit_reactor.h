// Audit: a header (admitted with the audit's memory), then items (pairs of
// maps, or the item's two attention passes, each admitted) compared on the
// worker pool's long lane in parallel, each answered as it finishes, then the
// report, built on a worker. Every message is parsed on a worker. Reading pauses while
// `max_in_flight` items are being compared or too many answers wait for the
// client, so memory stays bounded whatever the client sends.
//
// The call moves through these phases (Phase below):
//
//   kAwaitingHeader --header--> kOpening --opened--> kAuditing
//   kAuditing --end or half-close--> kDraining --last item done--> kReporting
//   kReporting --report queued--> kReported --written--> kFinished
//   any phase --error--> kFailed --nothing in flight--> kFinished
#ifndef ATTNROLL_SERVER_RPC_AUDIT_REACTOR_H_
#define ATTNROLL_SERVER_RPC_AUDIT_REACTOR_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/rpc/call_state.h"
#include "server/rpc/service_context.h"
#include "server/rpc/tsan_handoff.h"
#include "server/rpc/write_queue.h"
#include "server/session/audit_session.h"

namespace attnroll::rpc {

class AuditReactor : public HandOffs<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>> {
 public:
  AuditReactor(grpc::CallbackServerContext* call, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override {
    TookAll();
    delete this;
  }

 private:
  enum class Phase {
    kAwaitingHeader,  // the first message is being read
    kOpening,         // the header is being opened on a worker
    kAuditing,        // items are read and compared
    kDraining,        // no more reads; items still being compared
    kReporting,       // the report is being built on a worker
    kReported,        // the report is queued: finish once it is written
    kFailed,          // an error ends the call: finish once nothing is in flight
    kFinished,        // Finish was called
  };
  // An item given as attention, streamed between pass_begin and pass_end.
  struct PassItem {
    std::string id, group;
    OpenPass baseline, candidate;
    absl::Status error;  // set: the rest of the item is dropped, the error answered
  };

  void HandleMessage();                        // worker: parses and dispatches, in order
  void Open(const v1::AuditHeader& header);   // worker
  void Admitted(absl::StatusOr<runtime::Admission::Ticket> ticket);
  void HandlePassMessage();                    // worker: pass_begin / pass_layer, in order
  void SidesOpened(absl::StatusOr<OpenPass> pass);  // worker
  void SubmitItem();                           // an item of two maps: compared on the pool
  void SubmitPassItem();                       // pass_end: completes on the pool
  void CompletePassItem(PassItem& item);       // worker
  void ItemDone(v1::AuditItemResult result);   // worker (or a refusal on a callback)
  void Enqueue(const v1::AuditResponse& response);
  void ReadNext();
  void ReadNextOrPause();
  // Moves kDraining to kReporting once no item is in flight; the report is
  // built on this thread when it is a worker, else on the pool.
  void MaybeReport(bool on_worker);
  void BuildReport();  // worker
  void End(const absl::Status& status);
  // Finishes the call once nothing is in flight, being written or using the
  // reactor (a caller must not touch `this` after TryFinish / FinishNow).
  void TryFinish();
  bool ReadyToFinishLocked(absl::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishNow(const absl::Status& status);

  grpc::CallbackServerContext* call_;
  ServiceContext* ctx_;
  CallState state_;
  const int max_in_flight_;
  grpc::ByteBuffer buffer_;
  v1::AuditRequest request_;
  int64_t messages_ = 0;
  std::unique_ptr<session::AuditSession> session_;
  // The attention item being streamed; touched by one task at a time (reads
  // wait for its messages to be handled).
  std::unique_ptr<PassItem> current_;
  runtime::Admission::Ticket ticket_;  // the audit's admission (its memory)

  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kAwaitingHeader;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);  // kFailed: the call's status
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;        // items being compared
  int busy_ ABSL_GUARDED_BY(mu_) = 0;  // worker tasks past in_flight_ still using `this`
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;  // flow control: a read is owed
  WriteQueue<grpc::ByteBuffer> writes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_AUDIT_REACTOR_H_
