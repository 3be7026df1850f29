#include "server/rpc/stream_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/session/field_status.h"

namespace attnroll::rpc {
namespace {
// Responses the client has not taken yet before reading pauses.
constexpr size_t kMaxQueuedWrites = 4;
// Failed ids remembered (to drop their remaining messages quietly).
constexpr size_t kMaxFailedIds = 1024;
// Longest request_id: ids are stored, so their size must be bounded.
constexpr size_t kMaxRequestIdBytes = 256;
}  // namespace

StreamReactor::StreamReactor(grpc::CallbackServerContext* call, ServiceContext* ctx)
    : call_(call), ctx_(ctx) {
  StartRead(&request_);
}

void StreamReactor::OnReadDone(bool ok) {
  if (!ok) {
    // Half-close or cancellation: passes without a PassEnd cannot complete.
    while (!passes_.empty()) {
      FailPass(passes_.begin()->first,
               absl::InvalidArgumentError(
                   "end: the stream closed before this pass's PassEnd; pass abandoned"));
    }
    {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
    }
    return MaybeFinish();
  }
  if (absl::Status s = ctx_->pool->Submit([this] { HandleMessage(); }); !s.ok()) {
    // The pass this message belongs to is dropped; the stream goes on.
    const std::string id = request_.request_id();
    request_.Clear();
    FailPass(id, s);
    ReadNextOrPause();
  }
}

void StreamReactor::HandleMessage() {
  if (!call_->IsCancelled()) HandleOne();
  request_.Clear();
  ReadNextOrPause();  // the last use of `this` in this task
}

void StreamReactor::HandleOne() {
  const std::string& id = request_.request_id();
  if (id.size() > kMaxRequestIdBytes) {
    // Ids are kept (open and failed passes): a long one is refused, not stored.
    v1::StreamResponse r;
    r.set_request_id(id.substr(0, kMaxRequestIdBytes));
    *r.mutable_error() = session::ToPassError(absl::InvalidArgumentError(absl::StrCat(
        "request_id: expected at most ", kMaxRequestIdBytes, " bytes, got ", id.size())));
    return Enqueue(std::move(r));
  }
  if (id.empty()) {
    return Enqueue([] {
      v1::StreamResponse r;
      *r.mutable_error() = session::ToPassError(
          absl::InvalidArgumentError("request_id: expected a non-empty id on every message"));
      return r;
    }());
  }
  if (failed_.count(id) != 0) {
    // The pass already failed: drop its messages until its end or a new header.
    if (request_.message_case() != v1::StreamRequest::kHeader) {
      if (request_.message_case() == v1::StreamRequest::kEnd) failed_.erase(id);
      return;
    }
    failed_.erase(id);
  }
  auto it = passes_.find(id);
  switch (request_.message_case()) {
    case v1::StreamRequest::kHeader: {
      if (it != passes_.end()) {
        return FailPass(id, absl::InvalidArgumentError(absl::StrCat(
                                "header: duplicate: pass '", id, "' already has a header")));
      }
      if (passes_.size() >= static_cast<size_t>(ctx_->config.max_passes_per_stream)) {
        return FailPass(id, absl::ResourceExhaustedError(absl::StrCat(
                                "stream: ", passes_.size(), " passes are open, the server's ",
                                "max_passes_per_stream is ", ctx_->config.max_passes_per_stream)));
      }
      v1::PassHeader header = request_.header();
      header.set_request_id(id);
      absl::StatusOr<OpenPass> open = OpenPassFromHeader(*ctx_, header);
      if (!open.ok()) return FailPass(id, open.status());
      passes_.emplace(id, std::move(*open));
      return;
    }
    case v1::StreamRequest::kLayer: {
      if (it == passes_.end()) {
        return FailPass(id, absl::InvalidArgumentError(absl::StrCat(
                                "request_id: no open pass '", id, "': send its header first")));
      }
      ctx_->metrics->AttentionBytes(request_.layer().attention().data().size());
      if (absl::Status s = it->second.session->AddChunk(request_.layer()); !s.ok()) {
        return FailPass(id, s);
      }
      return;
    }
    case v1::StreamRequest::kEnd: {
      if (it == passes_.end()) {
        return FailPass(id, absl::InvalidArgumentError(absl::StrCat(
                                "request_id: no open pass '", id, "' to end")));
      }
      session::FinishContext finish = MakeFinishContext(*ctx_, call_);
      finish.progress = [this, id](int analysis, int64_t done, int64_t total) {
        v1::StreamResponse r;
        r.set_request_id(id);
        r.mutable_progress()->set_analysis(analysis);
        r.mutable_progress()->set_done(done);
        r.mutable_progress()->set_total(total);
        Enqueue(std::move(r));
      };
      absl::StatusOr<v1::ExplainResponse> result = it->second.session->Finish(finish);
      if (!result.ok()) return FailPass(id, result.status());
      v1::StreamResponse r;
      r.set_request_id(id);
      *r.mutable_result() = std::move(*result);
      EndPass(id, absl::OkStatus());
      passes_.erase(id);
      return Enqueue(std::move(r));
    }
    default:
      return FailPass(id, absl::InvalidArgumentError(
                              "message: expected a header, a layer or an end, got none"));
  }
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
  v1::StreamResponse r;
  r.set_request_id(copy);
  *r.mutable_error() = session::ToPassError(status);
  Enqueue(std::move(r));
}

// Frees an open pass's memory and records its outcome (the caller erases it).
void StreamReactor::EndPass(const std::string& id, const absl::Status& status) {
  auto it = passes_.find(id);
  if (it != passes_.end()) ClosePass(*ctx_, it->second, "ExplainStream", status);
}

void StreamReactor::Enqueue(v1::StreamResponse response) {
  const v1::StreamResponse* next;
  {
    absl::MutexLock lock(&mu_);
    next = writes_.Push(std::move(response));
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
  StartRead(&request_);
}

void StreamReactor::OnWriteDone(bool ok) {
  const v1::StreamResponse* next;
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
  if (resume_read) StartRead(&request_);
  MaybeFinish();
}

void StreamReactor::MaybeFinish() {
  {
    absl::MutexLock lock(&mu_);
    if (!reads_done_ || !writes_.idle() || finished_) return;
    finished_ = true;
  }
  Finish(call_->IsCancelled() ? grpc::Status::CANCELLED : grpc::Status::OK);
}

}  // namespace attnroll::rpc
