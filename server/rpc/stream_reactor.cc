#include "server/rpc/stream_reactor.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "proto/cpp/grpc_status.h"
#include "server/rpc/proto_io.h"
#include "server/runtime/refusal.h"
#include "server/session/field_status.h"

namespace attnroll::rpc {
namespace {
// Responses the client has not taken yet before reading pauses.
constexpr size_t kMaxQueuedWrites = 4;
// Failed ids remembered (to drop their remaining messages quietly).
constexpr size_t kMaxFailedIds = 1024;
// Longest request_id: ids are stored, so their size must be bounded.
constexpr size_t kMaxRequestIdBytes = 256;
constexpr char kRpc[] = "ExplainStream";
}  // namespace

StreamReactor::StreamReactor(grpc::CallbackServerContext* call, ServiceContext* ctx)
    : call_(call), ctx_(ctx), state_(ctx, call, kRpc) {
  if (!state_.authenticated().ok() || ctx_->shutting_down.load()) {
    const absl::Status s =
        !state_.authenticated().ok()
            ? state_.authenticated()
            : runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down, not accepting new passes");
    state_.Ended(s);
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
    }
    Finish(ToGrpcStatus(s));
    return;
  }
  StartReading();
}

// The next read, with the stream's idle timer: the pass timeout while a pass
// is open, the (longer) stream timeout when nothing is.
void StreamReactor::StartReading() {
  state_.ArmIdle(passes_.empty() ? state_.stream_idle_timeout() : state_.idle_timeout());
  StartRead(&buffer_);
}

void StreamReactor::OnReadDone(bool ok) {
  const Reaction reaction = TookRead();
  state_.DisarmIdle();
  if (!ok) {
    // Half-close or cancellation: the passes are failed (and freed) on a worker.
    if (!ctx_->pool->Submit(runtime::Lane::kStep, [this] { StreamEnded(); }).ok()) StreamEnded();
    return;
  }
  ++messages_;
  const runtime::Lane lane = messages_ == 1 ? runtime::Lane::kNew : runtime::Lane::kStep;
  if (absl::Status s = ctx_->pool->Submit(lane, [this] { HandleMessage(); }); !s.ok()) {
    // The first message found the queue of new work full: the stream ends.
    {
      absl::MutexLock lock(&mu_);
      end_status_ = s;
      reads_done_ = true;
    }
    MaybeFinish();
  }
}

void StreamReactor::HandleMessage() {
  bool read_now = true;
  if (!call_->IsCancelled()) {
    if (absl::Status s = ParseMessage(buffer_, messages_, "StreamRequest", &request_); !s.ok()) {
      // A message that does not parse has no request id to answer: the stream ends.
      {
        absl::MutexLock lock(&mu_);
        end_status_ = s;
      }
      return StreamEnded();
    }
    ExpireIdlePasses();
    read_now = HandleOne();
  }
  if (!read_now) return;  // admission resumes reading
  request_.Clear();
  ReadNextOrPause();  // the last use of `this` in this task
}

void StreamReactor::ExpireIdlePasses() {
  const absl::Time now = absl::Now();
  std::vector<std::string> idle;
  for (const auto& [id, open] : passes_) {
    if (now - open.last_message >= state_.idle_timeout()) idle.push_back(id);
  }
  for (const std::string& id : idle) {
    FailPass(id, runtime::Refused(runtime::Refusal::kIdle,
                                  absl::StrCat("idle: no message of this pass for ",
                                               ctx_->config.idle_timeout_seconds,
                                               " s (idle_timeout_seconds); pass ended")));
  }
}

bool StreamReactor::HandleOne() {
  const std::string& id = request_.request_id();
  if (id.size() > kMaxRequestIdBytes) {
    // Ids are kept (open and failed passes): a long one is refused, not stored.
    v1::StreamResponse r;
    r.set_request_id(id.substr(0, kMaxRequestIdBytes));
    *r.mutable_error() = session::ToPassError(absl::InvalidArgumentError(absl::StrCat(
        "request_id: expected at most ", kMaxRequestIdBytes, " bytes, got ", id.size())));
    Enqueue(r);
    return true;
  }
  if (id.empty()) {
    v1::StreamResponse r;
    *r.mutable_error() = session::ToPassError(
        absl::InvalidArgumentError("request_id: expected a non-empty id on every message"));
    Enqueue(r);
    return true;
  }
  if (failed_.count(id) != 0) {
    // The pass already failed: drop its messages until its end or a new header.
    if (request_.message_case() != v1::StreamRequest::kHeader) {
      if (request_.message_case() == v1::StreamRequest::kEnd) failed_.erase(id);
      return true;
    }
    failed_.erase(id);
  }
  auto it = passes_.find(id);
  switch (request_.message_case()) {
    case v1::StreamRequest::kHeader: {
      if (it != passes_.end()) {
        FailPass(id, absl::InvalidArgumentError(absl::StrCat("header: duplicate: pass '", id,
                                                             "' already has a header")));
        return true;
      }
      if (passes_.size() >= static_cast<size_t>(ctx_->config.max_passes_per_stream)) {
        const absl::Status s = runtime::Refused(
            runtime::Refusal::kLimits,
            absl::StrCat("stream: ", passes_.size(), " passes are open, the server's ",
                         "max_passes_per_stream is ", ctx_->config.max_passes_per_stream));
        ctx_->metrics->PassFinished(kRpc, s.code(), 0);
        FailPass(id, s);
        return true;
      }
      v1::PassHeader header = std::move(*request_.mutable_header());
      header.set_request_id(id);
      OpenPassAsync(*ctx_, header, kRpc, state_.Request(1, "the pass"),
                    [this, id](absl::StatusOr<OpenPass> pass) { Opened(id, std::move(pass)); });
      return false;
    }
    case v1::StreamRequest::kLayer:
    case v1::StreamRequest::kLayers: {
      if (it == passes_.end()) {
        FailPass(id, absl::InvalidArgumentError(
                         absl::StrCat("request_id: no open pass '", id, "': send its header first")));
        return true;
      }
      it->second.last_message = absl::Now();
      // One layer message, or several in one (each handled as if it came alone).
      auto add = [&](const v1::LayerChunk& chunk) {
        absl::Status s = AddChunk(*ctx_, it->second.pass, chunk);
        if (!s.ok()) FailPass(id, s);
        return s.ok();
      };
      if (request_.has_layer()) {
        add(request_.layer());
        return true;
      }
      if (request_.layers().layers().empty()) {
        FailPass(id, absl::InvalidArgumentError(absl::StrCat(
                         "layers (message ", messages_, "): expected at least one layer message, got none")));
        return true;
      }
      for (const v1::LayerChunk& chunk : request_.layers().layers()) {
        if (!add(chunk)) break;
      }
      return true;
    }
    case v1::StreamRequest::kEnd: {
      if (it == passes_.end()) {
        FailPass(id, absl::InvalidArgumentError(absl::StrCat("request_id: no open pass '", id, "' to end")));
        return true;
      }
      session::FinishContext finish = MakeFinishContext(*ctx_, call_);
      finish.progress = [this, id](int analysis, int64_t done, int64_t total) {
        v1::StreamResponse r;
        r.set_request_id(id);
        r.mutable_progress()->set_analysis(analysis);
        r.mutable_progress()->set_done(done);
        r.mutable_progress()->set_total(total);
        Enqueue(r);
      };
      session::Pass& pass = *it->second.pass.session;
      absl::StatusOr<v1::ExplainResponse> result = pass.Finish(finish);
      if (!result.ok()) {
        FailPass(id, call_->IsCancelled() ? state_.CancelledStatus("the pass") : result.status());
        return true;
      }
      ctx_->metrics->Compute(pass.kind(), result->timing().compute_seconds());
      FoldMonitored(*ctx_, it->second.pass, &*result);
      v1::StreamResponse r;
      r.set_request_id(id);
      *r.mutable_result() = std::move(*result);
      EndPass(id, absl::OkStatus());
      passes_.erase(id);
      Enqueue(r);
      return true;
    }
    default:
      FailPass(id, absl::InvalidArgumentError(absl::StrCat(
                       "message ", messages_, ": expected a header, a layer, layers or an end, got none of them")));
      return true;
  }
}

void StreamReactor::Opened(const std::string& id, absl::StatusOr<OpenPass> pass) {
  if (pass.ok()) {
    Open& open = passes_[id];
    open.pass = *std::move(pass);
    open.last_message = absl::Now();
  } else {
    FailPass(id, pass.status());
  }
  request_.Clear();
  ReadNextOrPause();
}

void StreamReactor::StreamEnded() {
  // Passes without a PassEnd cannot complete.
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = end_status_;
  }
  const absl::Status why =
      call_->IsCancelled()
          ? state_.CancelledStatus("the stream")
          : !status.ok() ? status
                         : absl::InvalidArgumentError(
                               "end: the stream closed before this pass's PassEnd; pass abandoned");
  while (!passes_.empty()) FailPass(passes_.begin()->first, why);
  {
    absl::MutexLock lock(&mu_);
    reads_done_ = true;
  }
  MaybeFinish();
}

// Reports `status` for pass `id` in-band and forgets the pass.
void StreamReactor::FailPass(const std::string& id, const absl::Status& status) {
  const std::string copy = id;  // id may point into request_ or passes_
  if (passes_.count(copy) != 0) {
    EndPass(copy, status);
    passes_.erase(copy);
  }
  if (failed_.size() >= kMaxFailedIds) failed_.erase(failed_.begin());
  failed_.insert(copy);
  if (const std::optional<runtime::Refusal> why = runtime::RefusalOf(status)) ctx_->metrics->Refused(*why);
  state_.PassFailed(copy, status);
  v1::StreamResponse r;
  r.set_request_id(copy);
  *r.mutable_error() = session::ToPassError(status);
  Enqueue(r);
}

// Frees an open pass's memory and records its outcome (the caller erases it).
void StreamReactor::EndPass(const std::string& id, const absl::Status& status) {
  auto it = passes_.find(id);
  if (it != passes_.end()) ClosePass(*ctx_, it->second.pass, kRpc, status);
}

void StreamReactor::Enqueue(const v1::StreamResponse& response) {
  grpc::ByteBuffer bytes;
  SerializeMessage(response, &bytes);
  const grpc::ByteBuffer* next;
  {
    absl::MutexLock lock(&mu_);
    next = writes_.Push(std::move(bytes));
  }
  if (next != nullptr) StartWrite(next);
}

void StreamReactor::ReadNextOrPause() {
  {
    absl::MutexLock lock(&mu_);
    if (writes_.size() >= kMaxQueuedWrites) {
      read_paused_ = true;
      return;
    }
  }
  StartReading();
}

void StreamReactor::OnWriteDone(bool ok) {
  const Reaction reaction = TookWrite();
  const grpc::ByteBuffer* next;
  bool resume_read = false;
  {
    absl::MutexLock lock(&mu_);
    next = writes_.Pop(ok);
    if (read_paused_ && writes_.size() < kMaxQueuedWrites) {
      read_paused_ = false;
      resume_read = true;
    }
  }
  if (next != nullptr) StartWrite(next);
  if (resume_read) StartReading();
  MaybeFinish();
}

void StreamReactor::MaybeFinish() {
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (!reads_done_ || !writes_.idle() || finished_) return;
    finished_ = true;
    status = end_status_;
  }
  if (status.ok() && call_->IsCancelled()) status = state_.CancelledStatus("the stream");
  state_.Ended(status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::rpc
