#include "server/rpc/audit_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/cpp/grpc_status.h"
#include "server/rpc/proto_io.h"
#include "server/runtime/refusal.h"
#include "server/session/field_status.h"

namespace attnroll::rpc {
namespace {
constexpr size_t kMaxQueuedWrites = 16;
constexpr char kRpc[] = "Audit";
}  // namespace

AuditReactor::AuditReactor(grpc::CallbackServerContext* call, ServiceContext* ctx)
    : call_(call), ctx_(ctx), state_(ctx, call, kRpc), max_in_flight_(std::max(1, ctx->config.workers * 2)) {
  if (ctx_->shutting_down.load()) {
    End(runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down, not accepting new audits"));
    return;
  }
  // The header: nothing is held yet, the stream's idle timeout applies.
  state_.ArmIdle(state_.stream_idle_timeout());
  StartRead(&buffer_);
}

void AuditReactor::OnReadDone(bool ok) {
  state_.DisarmIdle();
  if (!ok) {
    Phase was;
    {
      absl::MutexLock lock(&mu_);
      was = phase_;
      if (phase_ == Phase::kAuditing && current_ == nullptr) phase_ = Phase::kDraining;
    }
    if (call_->IsCancelled()) return End(state_.CancelledStatus("the audit"));
    if (was == Phase::kAwaitingHeader) {
      return End(absl::InvalidArgumentError("header: expected an AuditHeader first, the stream ended without one"));
    }
    if (was == Phase::kAuditing && current_ != nullptr) {
      // No task touches current_ while a read is outstanding.
      return End(absl::InvalidArgumentError(absl::StrCat(
          "pass_end: the stream ended inside item \"", current_->id, "\" (after its pass_begin)")));
    }
    if (was == Phase::kAuditing) MaybeReport(/*on_worker=*/false);
    return;
  }
  ++messages_;
  Phase phase;
  {
    absl::MutexLock lock(&mu_);
    phase = phase_;
  }
  // The header would open a call: new work, bounded. The rest are steps.
  const runtime::Lane lane = phase == Phase::kAwaitingHeader ? runtime::Lane::kNew : runtime::Lane::kStep;
  if (absl::Status s = ctx_->pool->Submit(lane, [this] { HandleMessage(); }); !s.ok()) End(s);
}

void AuditReactor::HandleMessage() {
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the audit"));
  if (absl::Status s = ParseMessage(buffer_, messages_, "AuditRequest", &request_); !s.ok()) return End(s);
  if (request_.has_end()) {
    // The end: once every item is in, the report (a half-open item is an error).
    if (session_ == nullptr) {
      return End(absl::InvalidArgumentError("header: expected an AuditHeader first, got an end"));
    }
    if (current_ != nullptr) {
      return End(absl::InvalidArgumentError(absl::StrCat(
          "pass_end: the audit ended inside item \"", current_->id, "\" (after its pass_begin)")));
    }
    {
      absl::MutexLock lock(&mu_);
      if (phase_ == Phase::kAuditing) phase_ = Phase::kDraining;
    }
    return MaybeReport(/*on_worker=*/true);
  }
  if (request_.has_header()) {
    if (session_ != nullptr) return End(absl::InvalidArgumentError("header: duplicate AuditHeader"));
    {
      absl::MutexLock lock(&mu_);
      if (phase_ == Phase::kAwaitingHeader) phase_ = Phase::kOpening;
    }
    return Open(request_.header());
  }
  if (session_ == nullptr) {
    return End(absl::InvalidArgumentError(absl::StrCat(
        "header: expected an AuditHeader first, got message ", messages_, " of another kind")));
  }
  if (request_.has_pass_begin() || request_.has_pass_layer()) return HandlePassMessage();
  if (request_.has_pass_end()) return SubmitPassItem();
  if (request_.has_item()) return SubmitItem();
  End(absl::InvalidArgumentError(absl::StrCat(
      "message ", messages_, ": expected a header, an item, pass_begin, pass_layer, pass_end or an end")));
}

void AuditReactor::Open(const v1::AuditHeader& header) {
  absl::StatusOr<std::unique_ptr<session::AuditSession>> session =
      session::AuditSession::Create(header, ctx_->config.limits);
  if (!session.ok()) return End(session.status());
  runtime::Admission::Request request = state_.Request(1, "the audit");
  request.bytes = (*session)->working_bytes(max_in_flight_);
  session_ = std::move(*session);
  ctx_->admission->Admit(std::move(request), [this](absl::StatusOr<runtime::Admission::Ticket> ticket) {
    Admitted(std::move(ticket));
  });
}

void AuditReactor::Admitted(absl::StatusOr<runtime::Admission::Ticket> ticket) {
  if (!ticket.ok()) return End(ticket.status());
  ticket_ = *std::move(ticket);
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kOpening) phase_ = Phase::kAuditing;
  }
  ReadNext();
}

void AuditReactor::SubmitItem() {
  auto item = std::make_shared<v1::AuditItem>(std::move(*request_.mutable_item()));
  {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
  }
  absl::Status queued = ctx_->pool->Submit(runtime::Lane::kLong, [this, item] {
    ItemDone(session_->AddItem(*item, [call = call_] { return call->IsCancelled(); }));
  });
  if (!queued.ok()) ItemDone(session::AuditSession::FailedItem(item->id(), queued));
  ReadNextOrPause();
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
    // The baseline, then the candidate; reading resumes when both are open.
    return OpenPassAsync(*ctx_, begin.pass(), kRpc, state_.Request(1, "the item's baseline pass"),
                         [this](absl::StatusOr<OpenPass> pass) { SidesOpened(std::move(pass)); });
  }
  if (current_ == nullptr) {
    return End(absl::InvalidArgumentError("pass_layer: expected a pass_begin first"));
  }
  const v1::AuditPassLayer& layer = request_.pass_layer();
  OpenPass& side = layer.candidate() ? current_->candidate : current_->baseline;
  ctx_->metrics->AttentionBytes(layer.layer().attention().data().size() +
                                layer.layer().gradient().data().size());
  if (current_->error.ok()) {
    if (absl::Status s = side.session->AddChunk(layer.layer()); !s.ok()) {
      current_->error = session::Whose(layer.candidate() ? "candidate" : "baseline", s);
    }
  }
  if (!current_->error.ok()) {  // free the item's memory at once; its end answers
    ClosePass(*ctx_, current_->baseline, kRpc, current_->error);
    ClosePass(*ctx_, current_->candidate, kRpc, current_->error);
  }
  request_.Clear();
  ReadNext();
}

void AuditReactor::SidesOpened(absl::StatusOr<OpenPass> pass) {
  if (!pass.ok()) {
    // The item is refused in-band at its pass_end; its messages are dropped.
    current_->error = pass.status();
    ClosePass(*ctx_, current_->baseline, kRpc, current_->error);
  } else if (!current_->baseline.open()) {
    current_->baseline = *std::move(pass);
    v1::AuditPassBegin& begin = *request_.mutable_pass_begin();
    return OpenPassAsync(*ctx_, begin.pass(), kRpc, state_.Request(1, "the item's candidate pass"),
                         [this](absl::StatusOr<OpenPass> p) { SidesOpened(std::move(p)); });
  } else {
    current_->candidate = *std::move(pass);
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
  absl::Status queued = ctx_->pool->Submit(runtime::Lane::kLong, [this, item] { CompletePassItem(*item); });
  if (!queued.ok()) {
    // Answered in-band; the item's passes are freed with it.
    item->error = queued;
    ClosePass(*ctx_, item->baseline, kRpc, queued);
    ClosePass(*ctx_, item->candidate, kRpc, queued);
    ItemDone(session::AuditSession::FailedItem(item->id, queued));
  }
  ReadNextOrPause();
}

void AuditReactor::CompletePassItem(PassItem& item) {
  const absl::Time start = absl::Now();
  v1::AuditItemResult result =
      item.error.ok()
          ? session_->AddPassItem(item.id, item.group, *item.baseline.session,
                                  *item.candidate.session,
                                  MakeFinishContext(*ctx_, call_, /*parallel=*/false))
          : session::AuditSession::FailedItem(item.id, item.error);
  if (item.error.ok()) ctx_->metrics->Compute("audit-item", absl::ToDoubleSeconds(absl::Now() - start));
  const absl::Status outcome =
      result.has_error() ? session::FromPassError(result.error()) : absl::OkStatus();
  ClosePass(*ctx_, item.baseline, kRpc, outcome);
  ClosePass(*ctx_, item.candidate, kRpc, outcome);
  ItemDone(std::move(result));
}

void AuditReactor::ItemDone(v1::AuditItemResult result) {
  v1::AuditResponse response;
  *response.mutable_item() = std::move(result);
  Enqueue(response);
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
  if (resume) ReadNext();
  MaybeReport(/*on_worker=*/true);
  absl::Status status;
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
  state_.ArmIdle(state_.idle_timeout());
  StartRead(&buffer_);
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
  ReadNext();
}

void AuditReactor::MaybeReport(bool on_worker) {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kDraining || in_flight_ > 0) return;
    phase_ = Phase::kReporting;
    ++busy_;  // until the report is queued
  }
  if (on_worker) return BuildReport();
  if (absl::Status s = ctx_->pool->Submit(runtime::Lane::kStep, [this] { BuildReport(); }); !s.ok()) {
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
  absl::Status failed;
  if (!cancelled) {
    absl::StatusOr<v1::AuditReport> report = session_->Report();
    if (report.ok()) {
      *response.mutable_report() = *std::move(report);
    } else {
      failed = report.status();
    }
  }
  const bool write = !cancelled && failed.ok();
  grpc::ByteBuffer bytes;
  if (write) SerializeMessage(response, &bytes);
  const grpc::ByteBuffer* next = nullptr;
  {
    absl::MutexLock lock(&mu_);
    --busy_;
    if (phase_ == Phase::kReporting && write) {
      // Queued and marked in one step: a write finishing meanwhile must not
      // end the call before the report is out.
      next = writes_.Push(std::move(bytes));
      phase_ = Phase::kReported;
    }
  }
  if (cancelled) return End(state_.CancelledStatus("the audit"));
  if (!failed.ok()) return End(failed);
  if (next != nullptr) StartWrite(next);  // else OnWriteDone writes it, then finishes
}

void AuditReactor::Enqueue(const v1::AuditResponse& response) {
  grpc::ByteBuffer bytes;
  SerializeMessage(response, &bytes);
  const grpc::ByteBuffer* next;
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kFailed || phase_ == Phase::kFinished) return;
    next = writes_.Push(std::move(bytes));
  }
  if (next != nullptr) StartWrite(next);
}

void AuditReactor::OnWriteDone(bool ok) {
  const grpc::ByteBuffer* next;
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
  if (resume) ReadNext();
  TryFinish();
}

// Ends the call with an error: nothing more is read or sent; the call
// finishes once no item is being compared and no answer is being written.
void AuditReactor::End(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kFailed || phase_ == Phase::kFinished) return;
    phase_ = Phase::kFailed;
    end_status_ = status;
  }
  TryFinish();
}

bool AuditReactor::ReadyToFinishLocked(absl::Status* status) {
  if (busy_ > 0 || in_flight_ > 0 || !writes_.idle()) return false;
  switch (phase_) {
    case Phase::kFailed: *status = end_status_; break;
    case Phase::kReported: *status = absl::OkStatus(); break;
    default: return false;
  }
  phase_ = Phase::kFinished;
  return true;
}

void AuditReactor::TryFinish() {
  absl::Status status;
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    finish = ReadyToFinishLocked(&status);
  }
  if (finish) FinishNow(status);
}

void AuditReactor::FinishNow(const absl::Status& status) {
  if (current_ != nullptr) {  // an attention item cut short by an error
    ClosePass(*ctx_, current_->baseline, kRpc, absl::CancelledError("audit ended"));
    ClosePass(*ctx_, current_->candidate, kRpc, absl::CancelledError("audit ended"));
  }
  ticket_.Release();
  state_.Ended(status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::rpc
