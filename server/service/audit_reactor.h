// Audit: a header, then items (pairs of maps) compared on the worker pool in
// parallel, each answered as it finishes, then the report. Reading pauses
// while `max_in_flight` items are being compared or too many answers wait for
// the client, so memory stays bounded whatever the client sends.
#ifndef ATTNROLL_SERVER_SERVICE_AUDIT_REACTOR_H_
#define ATTNROLL_SERVER_SERVICE_AUDIT_REACTOR_H_

#include <deque>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/service/audit_session.h"
#include "server/service/memory_budget.h"
#include "server/service/service_context.h"

namespace attnroll::service {

class AuditReactor : public grpc::ServerBidiReactor<v1::AuditRequest, v1::AuditResponse> {
 public:
  AuditReactor(grpc::CallbackServerContext* call, ServiceContext* ctx);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void Open(const v1::AuditHeader& header);  // worker
  void HandlePassMessage();                   // worker: pass_begin / pass_layer, in order
  void SubmitPassItem();                      // pass_end: completes on the pool
  void ItemDone(v1::AuditItemResult result);   // worker
  void Enqueue(v1::AuditResponse response);
  void ReadNextOrPause();
  void MaybeReport();
  void End(const absl::Status& status);
  // Finishes the call once nothing is in flight, being written or using the
  // reactor (a caller must not touch `this` after TryFinish / FinishNow).
  void TryFinish();
  bool ReadyToFinishLocked(grpc::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishNow(const grpc::Status& status);

  grpc::CallbackServerContext* call_;
  ServiceContext* ctx_;
  const int max_in_flight_;
  v1::AuditRequest request_;
  std::unique_ptr<AuditSession> session_;
  // The attention item being streamed (pass_begin .. pass_end); touched by one
  // task at a time (reads wait for its messages to be handled).
  struct PassItem {
    std::string id, group;
    OpenPass baseline, candidate;
    absl::Status error;  // set: the rest of the item is dropped, the error answered
  };
  std::unique_ptr<PassItem> current_;
  MemoryBudget::Reservation reservation_;

  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;  // worker tasks past in_flight_ still using `this`
  bool reading_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool reporting_ ABSL_GUARDED_BY(mu_) = false;  // the report is being built
  bool reported_ ABSL_GUARDED_BY(mu_) = false;   // ... and queued
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;  // an error ends the call: finish when idle
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::AuditResponse> writes_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_AUDIT_REACTOR_H_
