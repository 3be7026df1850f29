#include "server/rpc/audit_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/cpp/grpc_status.h"
#include "server/session/field_status.h"

namespace attnroll::rpc {
namespace {
constexpr size_t kMaxQueuedWrites = 16;
}  // namespace

AuditReactor::AuditReactor(grpc::CallbackServerContext* call, ServiceContext* ctx)
    : call_(call), ctx_(ctx), max_in_flight_(std::max(1, ctx->config.workers * 2)) {
  StartRead(&request_);
}

void AuditReactor::OnReadDone(bool ok) {
  if (!ok || request_.has_end()) {
    Phase was;
    {
      absl::MutexLock lock(&mu_);
      was = phase_;
      if (phase_ == Phase::kAuditing) phase_ = Phase::kDraining;
    }
    if (was == Phase::kAwaitingHeader) {
      return End(call_->IsCancelled()
                     ? absl::CancelledError("audit cancelled")
                     : absl::InvalidArgumentError("header: expected an AuditHeader first, got none"));
    }
    if (was == Phase::kAuditing) MaybeReport(/*on_worker=*/false);
    return;
  }
  if (request_.has_header()) {
    {
      absl::MutexLock lock(&mu_);
      if (phase_ == Phase::kAwaitingHeader) phase_ = Phase::kOpening;
    }
    if (session_ != nullptr) return End(absl::InvalidArgumentError("header: duplicate AuditHeader"));
    v1::AuditHeader header = std::move(*request_.mutable_header());
    if (absl::Status s = ctx_->pool->Submit([this, header = std::move(header)] { Open(header); });
        !s.ok()) {
      End(s);
    }
    return;
  }
  if (session_ == nullptr) {
    return End(absl::InvalidArgumentError("header: expected an AuditHeader first, got an item"));
  }
  if (request_.has_pass_begin() || request_.has_pass_layer()) {
    // In order: the next read starts when this message is handled.
    if (absl::Status s = ctx_->pool->Submit([this] { HandlePassMessage(); }); !s.ok()) End(s);
    return;
  }
  if (request_.has_pass_end()) return SubmitPassItem();
  if (!request_.has_item()) {
    return End(absl::InvalidArgumentError("message: expected a header, an item or an end"));
  }
  auto item = std::make_shared<v1::AuditItem>(std::move(*request_.mutable_item()));
  {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
  }
  if (absl::Status s = ctx_->pool->Submit([this, item] { ItemDone(session_->AddItem(*item)); });
      !s.ok()) {
    // Answered in-band; the audit goes on.
    ItemDone(session::AuditSession::FailedItem(item->id(), s));
  }
  ReadNextOrPause();
}

void AuditReactor::Open(const v1::AuditHeader& header) {
  absl::StatusOr<std::unique_ptr<session::AuditSession>> session =
      session::AuditSession::Create(header, ctx_->config.limits);
  if (!session.ok()) return End(session.status());
  if (absl::Status s = ReserveMemory(*ctx_, (*session)->working_bytes(max_in_flight_), "the audit",
                                     &reservation_);
      !s.ok()) {
    return End(s);
  }
  session_ = std::move(*session);
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kOpening) phase_ = Phase::kAuditing;
  }
  ReadNext();
}

void AuditReactor::HandlePassMessage() {
  if (request_.has_pass_begin()) {
    v1::AuditPassBegin& begin = *request_.mutable_pass_begin();
    if (current_ != nullptr) {
      return End(absl::InvalidArgumentError(absl::StrCat(
          "pass_begin: item \"", begin.id(), "\" begins before item \"", current_->id,
          "\" ended (send pass_end)")));
    }
    current_ = std::make_unique<PassItem>();
    current_->id = begin.id();
    current_->group = begin.group();
    for (OpenPass* side : {&current_->baseline, &current_->candidate}) {
      absl::StatusOr<OpenPass> pass = OpenPassFromHeader(*ctx_, begin.pass());
      if (!pass.ok()) {
        current_->error = pass.status();
        break;
      }
      *side = std::move(*pass);
    }
  } else {
    if (current_ == nullptr) {
      return End(absl::InvalidArgumentError("pass_layer: expected a pass_begin first"));
    }
    const v1::AuditPassLayer& layer = request_.pass_layer();
    OpenPass& side = layer.candidate() ? current_->candidate : current_->baseline;
    if (current_->error.ok()) {
      if (absl::Status s = side.session->AddChunk(layer.layer()); !s.ok()) {
        current_->error = session::Whose(layer.candidate() ? "candidate" : "baseline", s);
      }
    }
  }
  if (!current_->error.ok()) {  // free the item's memory at once; its end answers
    ClosePass(*ctx_, current_->baseline, "Audit", current_->error);
    ClosePass(*ctx_, current_->candidate, "Audit", current_->error);
  }
  request_.Clear();
  ReadNext();
}

void AuditReactor::SubmitPassItem() {
  if (current_ == nullptr) {
    return End(absl::InvalidArgumentError("pass_end: expected a pass_begin first"));
  }
  std::shared_ptr<PassItem> item(current_.release());
  {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
  }
  if (absl::Status s = ctx_->pool->Submit([this, item] { CompletePassItem(*item); }); !s.ok()) {
    // Answered in-band without computing on this thread.
    item->error = s;
    ClosePass(*ctx_, item->baseline, "Audit", s);
    ClosePass(*ctx_, item->candidate, "Audit", s);
    ItemDone(session::AuditSession::FailedItem(item->id, s));
  }
  ReadNextOrPause();
}

void AuditReactor::CompletePassItem(PassItem& item) {
  v1::AuditItemResult result =
      item.error.ok()
          ? session_->AddPassItem(item.id, item.group, *item.baseline.session,
                                  *item.candidate.session,
                                  MakeFinishContext(*ctx_, call_, /*parallel=*/false))
          : session::AuditSession::FailedItem(item.id, item.error);
  const absl::Status outcome =
      result.has_error() ? session::FromPassError(result.error()) : absl::OkStatus();
  ClosePass(*ctx_, item.baseline, "Audit", outcome);
  ClosePass(*ctx_, item.candidate, "Audit", outcome);
  ItemDone(std::move(result));
}

void AuditReactor::ItemDone(v1::AuditItemResult result) {
  v1::AuditResponse response;
  *response.mutable_item() = std::move(result);
  Enqueue(std::move(response));
  bool resume = false;
  {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    ++busy_;  // this task still uses the reactor: nobody may finish it meanwhile
    if (read_paused_ && phase_ == Phase::kAuditing && writes_.size() < kMaxQueuedWrites) {
      read_paused_ = false;
      resume = true;
    }
  }
  if (resume) StartRead(&request_);
  MaybeReport(/*on_worker=*/true);
  grpc::Status status;
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    --busy_;
    finish = ReadyToFinishLocked(&status);
  }
  if (finish) FinishNow(status);  // the last use of `this`
}

void AuditReactor::ReadNext() {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kAuditing) return;
  }
  StartRead(&request_);
}

void AuditReactor::ReadNextOrPause() {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kAuditing) return;
    if (in_flight_ >= max_in_flight_ || writes_.size() >= kMaxQueuedWrites) {
      read_paused_ = true;
      return;
    }
  }
  StartRead(&request_);
}

void AuditReactor::MaybeReport(bool on_worker) {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kDraining || in_flight_ > 0) return;
    phase_ = Phase::kReporting;
    ++busy_;  // until the report is queued
  }
  if (on_worker) return BuildReport();
  if (absl::Status s = ctx_->pool->Submit([this] { BuildReport(); }); !s.ok()) {
    {
      absl::MutexLock lock(&mu_);
      --busy_;
    }
    End(s);
  }
}

void AuditReactor::BuildReport() {
  v1::AuditResponse response;
  const bool cancelled = call_->IsCancelled();
  if (!cancelled) *response.mutable_report() = session_->Report();
  const v1::AuditResponse* next = nullptr;
  {
    absl::MutexLock lock(&mu_);
    --busy_;
    if (phase_ == Phase::kReporting && !cancelled) {
      // Queued and marked in one step: a write finishing meanwhile must not
      // end the call before the report is out.
      next = writes_.Push(std::move(response));
      phase_ = Phase::kReported;
    }
  }
  if (cancelled) return End(absl::CancelledError("audit cancelled"));
  if (next != nullptr) StartWrite(next);  // else OnWriteDone writes it, then finishes
}

void AuditReactor::Enqueue(v1::AuditResponse response) {
  const v1::AuditResponse* next;
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kFailed || phase_ == Phase::kFinished) return;
    next = writes_.Push(std::move(response));
  }
  if (next != nullptr) StartWrite(next);
}

void AuditReactor::OnWriteDone(bool ok) {
  const v1::AuditResponse* next;
  bool resume = false;
  {
    absl::MutexLock lock(&mu_);
    next = writes_.Pop(ok);
    if (read_paused_ && phase_ == Phase::kAuditing && in_flight_ < max_in_flight_ &&
        writes_.size() < kMaxQueuedWrites) {
      read_paused_ = false;
      resume = true;
    }
  }
  if (next != nullptr) StartWrite(next);
  if (resume) StartRead(&request_);
  TryFinish();
}

// Ends the call with an error: nothing more is read or sent; the call
// finishes once no item is being compared and no answer is being written.
void AuditReactor::End(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kFailed || phase_ == Phase::kFinished) return;
    phase_ = Phase::kFailed;
    end_status_ = ToGrpcStatus(status);
  }
  TryFinish();
}

bool AuditReactor::ReadyToFinishLocked(grpc::Status* status) {
  if (busy_ > 0 || in_flight_ > 0 || !writes_.idle()) return false;
  switch (phase_) {
    case Phase::kFailed: *status = end_status_; break;
    case Phase::kReported: *status = grpc::Status::OK; break;
    default: return false;
  }
  phase_ = Phase::kFinished;
  return true;
}

void AuditReactor::TryFinish() {
  grpc::Status status;
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    finish = ReadyToFinishLocked(&status);
  }
  if (finish) FinishNow(status);
}

void AuditReactor::FinishNow(const grpc::Status& status) {
  if (current_ != nullptr) {  // an attention item cut short by an error
    ClosePass(*ctx_, current_->baseline, "Audit", absl::CancelledError("audit ended"));
    ClosePass(*ctx_, current_->candidate, "Audit", absl::CancelledError("audit ended"));
  }
  ReleaseMemory(*ctx_, reservation_);
  Finish(status);
}

}  // namespace attnroll::rpc
