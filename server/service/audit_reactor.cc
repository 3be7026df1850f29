#include "server/service/audit_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/service/status_util.h"

namespace attnroll::service {
namespace {
constexpr size_t kMaxQueuedWrites = 16;

v1::AuditItemResult ErrorResult(const std::string& id, const absl::Status& status) {
  v1::AuditItemResult result;
  result.set_id(id);
  *result.mutable_error() = ToPassError(status);
  return result;
}
}  // namespace

AuditReactor::AuditReactor(grpc::CallbackServerContext* call, ServiceContext* ctx)
    : call_(call), ctx_(ctx), max_in_flight_(std::max(1, ctx->config.workers * 2)) {
  StartRead(&request_);
}

void AuditReactor::OnReadDone(bool ok) {
  if (!ok || request_.has_end()) {
    {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
    }
    if (session_ == nullptr && !call_->IsCancelled()) {
      return End(absl::InvalidArgumentError("header: expected an AuditHeader first, got none"));
    }
    return MaybeReport();
  }
  if (request_.has_header()) {
    if (session_ != nullptr) return End(absl::InvalidArgumentError("header: duplicate AuditHeader"));
    v1::AuditHeader header = std::move(*request_.mutable_header());
    if (!ctx_->pool->TrySubmit([this, header = std::move(header)] { Open(header); })) {
      return End(absl::ResourceExhaustedError("server: worker queue full; retry later"));
    }
    return;
  }
  if (session_ == nullptr) {
    return End(absl::InvalidArgumentError("header: expected an AuditHeader first, got an item"));
  }
  if (request_.has_pass_begin() || request_.has_pass_layer()) {
    // In order: the next read starts when this message is handled.
    if (!ctx_->pool->TrySubmit([this] { HandlePassMessage(); })) {
      return End(absl::ResourceExhaustedError("server: worker queue full; retry later"));
    }
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
  if (!ctx_->pool->TrySubmit([this, item] { ItemDone(session_->AddItem(*item)); })) {
    ctx_->metrics->QueueRejected();
    ItemDone(ErrorResult(item->id(), absl::ResourceExhaustedError(
                                         "server: worker queue full; item not audited, resend it")));
  }
  ReadNextOrPause();
}

void AuditReactor::Open(const v1::AuditHeader& header) {
  absl::StatusOr<std::unique_ptr<AuditSession>> session =
      AuditSession::Create(header, ctx_->config.limits);
  if (!session.ok()) return End(session.status());
  if (absl::Status s = ReserveMemory(*ctx_, (*session)->working_bytes(max_in_flight_), "the audit",
                                     &reservation_);
      !s.ok()) {
    return End(s);
  }
  session_ = std::move(*session);
  StartRead(&request_);
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
        current_->error = absl::Status(
            s.code(), absl::StrCat(layer.candidate() ? "candidate " : "baseline ", s.message()));
      }
    }
    if (!current_->error.ok()) {  // free the item's memory at once; its end answers
      ClosePass(*ctx_, current_->baseline, "Audit", current_->error);
      ClosePass(*ctx_, current_->candidate, "Audit", current_->error);
    }
  }
  request_.Clear();
  StartRead(&request_);
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
  auto complete = [this, item] {
    v1::AuditItemResult result;
    if (!item->error.ok()) {
      result = ErrorResult(item->id, absl::Status(item->error.code(),
                                                  absl::StrCat("item \"", item->id, "\": ",
                                                               item->error.message())));
    } else {
      FinishContext finish;
      finish.cancelled = [call = call_] { return call->IsCancelled(); };
      result = session_->AddPassItem(item->id, item->group, *item->baseline.session,
                                     *item->candidate.session, finish);
    }
    const absl::Status outcome = result.has_error()
                                     ? absl::Status(static_cast<absl::StatusCode>(result.error().code()),
                                                    result.error().message())
                                     : absl::OkStatus();
    ClosePass(*ctx_, item->baseline, "Audit", outcome);
    ClosePass(*ctx_, item->candidate, "Audit", outcome);
    ItemDone(std::move(result));
  };
  if (!ctx_->pool->TrySubmit(complete)) {
    ctx_->metrics->QueueRejected();
    item->error = absl::ResourceExhaustedError("server: worker queue full; item not audited, resend it");
    // Answered in-band without computing on this thread.
    ClosePass(*ctx_, item->baseline, "Audit", item->error);
    ClosePass(*ctx_, item->candidate, "Audit", item->error);
    ItemDone(ErrorResult(item->id, item->error));
  }
  ReadNextOrPause();
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
    if (reading_paused_ && !reads_done_ && writes_.size() < kMaxQueuedWrites) {
      reading_paused_ = false;
      resume = true;
    }
  }
  if (resume) StartRead(&request_);
  MaybeReport();
  grpc::Status status;
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    --busy_;
    finish = ReadyToFinishLocked(&status);
  }
  if (finish) FinishNow(status);  // the last use of `this`
}

void AuditReactor::ReadNextOrPause() {
  {
    absl::MutexLock lock(&mu_);
    if (in_flight_ >= max_in_flight_ || writes_.size() >= kMaxQueuedWrites) {
      reading_paused_ = true;
      return;
    }
  }
  StartRead(&request_);
}

// Once reading is over and every item is in, the report is the last answer.
void AuditReactor::MaybeReport() {
  {
    absl::MutexLock lock(&mu_);
    if (!reads_done_ || in_flight_ > 0 || reporting_ || finished_ || ending_) return;
    reporting_ = true;
  }
  if (call_->IsCancelled()) return End(absl::CancelledError("audit cancelled"));
  v1::AuditResponse response;
  *response.mutable_report() = session_->Report();
  // Queued and marked in one step: a write finishing meanwhile must not end
  // the call before the report is out.
  const v1::AuditResponse* next = nullptr;
  {
    absl::MutexLock lock(&mu_);
    writes_.push_back(std::move(response));
    reported_ = true;
    if (!writing_) {
      writing_ = true;
      next = &writes_.front();
    }
  }
  if (next != nullptr) StartWrite(next);
}

void AuditReactor::Enqueue(v1::AuditResponse response) {
  const v1::AuditResponse* next = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || ending_) return;
    writes_.push_back(std::move(response));
    if (writing_) return;
    writing_ = true;
    next = &writes_.front();
  }
  StartWrite(next);
}

void AuditReactor::OnWriteDone(bool ok) {
  const v1::AuditResponse* next = nullptr;
  bool resume = false;
  {
    absl::MutexLock lock(&mu_);
    writes_.pop_front();
    if (!ok) writes_.clear();
    if (!writes_.empty()) {
      next = &writes_.front();
    } else {
      writing_ = false;
    }
    if (reading_paused_ && !reads_done_ && !ending_ && in_flight_ < max_in_flight_ &&
        writes_.size() < kMaxQueuedWrites) {
      reading_paused_ = false;
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
    if (ending_ || finished_) return;
    ending_ = true;
    end_status_ = ToGrpcStatus(status);
    reads_done_ = true;  // no more reads are started
  }
  TryFinish();
}

// Under mu_: the call can finish when nothing is compared, written or using
// the reactor, and it either failed or its report is out.
bool AuditReactor::ReadyToFinishLocked(grpc::Status* status) {
  if (finished_ || busy_ > 0 || in_flight_ > 0 || writing_) return false;
  if (ending_) {
    *status = end_status_;
  } else if (reported_ && writes_.empty()) {
    *status = grpc::Status::OK;
  } else {
    return false;
  }
  finished_ = true;
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
  reservation_.Release();
  ctx_->metrics->SetMemoryReserved(ctx_->budget->reserved());
  Finish(status);
}

}  // namespace attnroll::service
