// What every RPC handler shares: configuration, the worker pool, admission,
// timers and the metrics (owned by Server, outliving every reactor), and the
// steps every reactor takes the same way: opening a pass from its header
// (planned, admitted, then allocated), closing it, building the context its
// Finish runs with.
#ifndef ATTNROLL_SERVER_RPC_SERVICE_CONTEXT_H_
#define ATTNROLL_SERVER_RPC_SERVICE_CONTEXT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/runtime/admission.h"
#include "server/runtime/config.h"
#include "server/runtime/metrics.h"
#include "server/runtime/timers.h"
#include "server/runtime/worker_pool.h"
#include "server/session/monitor.h"
#include "server/session/pass.h"

namespace attnroll::rpc {

class Authenticator;

struct ServiceContext {
  runtime::ServerConfig config;
  const Authenticator* auth;
  runtime::WorkerPool* pool;
  runtime::Admission* admission;
  runtime::Timers* timers;
  runtime::Metrics* metrics;
  session::Monitor* monitor;  // live monitoring and baselines (never null)
  std::atomic<bool> shutting_down{false};
};

// A pass with its admission ticket: the session is freed before the ticket.
struct OpenPass {
  runtime::Admission::Ticket ticket;
  std::unique_ptr<session::Pass> session;
  absl::Time started;  // its header arrived
  // A monitored pass: what to fold when it finishes (MonitorTag).
  std::optional<session::MonitorTicket> monitor;
  bool open() const { return session != nullptr; }
};

// Header -> an OpenPass, asynchronously: refuses new passes while shutting
// down, plans the pass (limits, options), asks admission for `units` passes
// and the plan's working memory on top of `who.bytes` (what the caller holds
// for the pass: a whole pass's parsed message; waiting a short while for room), then
// allocates it on a worker and calls `done` there. A pass's monitor tag is
// checked first (only on Explain and ExplainStream) and may replace an
// unsampled monitor-only pass's analyses by a validation. `done` gets the refusal
// instead (counted as a pass of `rpc`), possibly from another thread; it is
// called exactly once. Call it from a worker (planning is work).
void OpenPassAsync(ServiceContext& ctx, const v1::PassHeader& header, const std::string& rpc,
                   runtime::Admission::Request who, std::function<void(absl::StatusOr<OpenPass>)> done);

// Adds a layer message to an open pass, its attention and gradient bytes
// counted in the metrics first (a chunk after a refused one is never counted).
absl::Status AddChunk(ServiceContext& ctx, OpenPass& pass, const v1::LayerChunk& chunk);

// Frees an open pass's memory (then its ticket) and records its outcome
// under `rpc` in the metrics; nothing for a pass that is not open.
void ClosePass(ServiceContext& ctx, OpenPass& pass, const std::string& rpc, const absl::Status& status);

// The context a pass's Finish runs with on behalf of `call`: cancelled with
// the call; with `parallel`, long analyses may use every worker of the pool.
// Folds a monitored pass's maps (on the worker that finished it); nothing
// for a pass without a tag. Monitor-only passes lose their results here.
void FoldMonitored(ServiceContext& ctx, const OpenPass& pass, v1::ExplainResponse* response);

session::FinishContext MakeFinishContext(ServiceContext& ctx, grpc::CallbackServerContext* call,
                                         bool parallel = true);

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_SERVICE_CONTEXT_H_
