// Live monitoring without gRPC: the window of every monitored model (and of
// its groups), the pinned baselines (stored by BaselineStore), the pass tag's
// checks and sampling, the fold of a finished pass's maps, and the state the
// Monitor RPC and the gauges report (docs/conventions.md, "Live monitoring").
//
// Threads. Admit and Fold run on the workers of passes; each model has its
// own mutex, held only for the O(n) fold of a map (never for I/O or drift).
// Pin and Remove hold the baselines' mutex (with the file write) and then
// the model's, briefly. State and Figures copy a model's sums under its
// mutex and compute the drift (CompareMaps: the EMD) outside it. Nothing here
// waits for a pass, and a pass never waits for more than one model's fold.
//
// Memory is bounded by the configuration: per model (1 + max_groups) windows
// of buckets * (16 * map_length + ~2.5 KB) bytes, map_length <=
// max_map_length; plus the baselines (at most max_baselines, each checked).
#ifndef ATTNROLL_SERVER_SESSION_MONITOR_H_
#define ATTNROLL_SERVER_SESSION_MONITOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "attnroll/v1/attnroll.pb.h"
#include "attnroll/v1/monitor.pb.h"
#include "server/analysis/drift.h"
#include "server/analysis/monitor_window.h"
#include "server/runtime/config.h"
#include "server/runtime/metrics.h"
#include "server/session/baseline_store.h"

namespace attnroll::session {

// What Admit decided for a tagged pass; Fold takes it back.
struct MonitorTicket {
  int model = -1;
  std::string group;
  bool sampled = false;
  bool monitor_only = false;
  int grid_h = 0, grid_w = 0;  // the pass's layout grid
};

class Monitor {
 public:
  // `clock`: seconds (time windows); empty: absl::Now. Opens the store when
  // config.data_dir is set (its errors: see BaselineStore::Open; a stored
  // baseline for a model not in --monitor-models is kept, listed and not used).
  static absl::StatusOr<std::unique_ptr<Monitor>> Create(const runtime::ServerConfig& config,
                                                         std::function<double()> clock = {});
  ~Monitor();

  // Checks `header->monitor` (field paths under `field`, e.g. "header"):
  // nullopt when unset. INVALID_ARGUMENT for a tag where `allowed` is false,
  // a model outside --monitor-models (the message lists them), a bad group,
  // sample_one_in above 1000000. Counts the pass and decides whether it is
  // sampled; an unsampled monitor-only pass has its analyses replaced by one
  // ValidateOnly (nothing is explained).
  absl::StatusOr<std::optional<MonitorTicket>> Admit(v1::PassHeader* header, bool allowed,
                                                     const std::string& field);

  // Folds a finished pass: the first analysis's map of every sequence (each
  // one sample), when sampled; then clears the results of a monitor-only
  // pass. Never fails: a map the window cannot take is counted as skipped.
  void Fold(const MonitorTicket& ticket, v1::ExplainResponse* response);

  // The RPCs (each runs on a worker).
  absl::StatusOr<v1::MonitorResponse> State(const v1::MonitorRequest& request);
  absl::StatusOr<v1::PinBaselineResponse> Pin(const v1::PinBaselineRequest& request);
  absl::StatusOr<v1::ListBaselinesResponse> List();
  absl::StatusOr<v1::RemoveBaselineResponse> Remove(const v1::RemoveBaselineRequest& request);

  // The gauges of every model (the exposer's thread). The drift of a model
  // is recomputed only when its window or baseline changed.
  std::vector<runtime::MonitorFigures> Figures();

  // Fixed bytes of every window allocated so far.
  int64_t window_bytes() const;

 private:
  struct Model;
  struct Snapshot;
  Monitor(const runtime::ServerConfig& config, std::function<double()> clock);
  absl::StatusOr<int> ModelIndex(const std::string& name, const std::string& field) const;
  analysis::WindowOptions WindowOptionsFor(int map_length) const;
  Snapshot Take(Model& m);
  void Use(Model& m, std::shared_ptr<const v1::Baseline> baseline);

  const runtime::ServerConfig config_;
  const std::function<double()> clock_;
  std::vector<std::unique_ptr<Model>> models_;
  mutable absl::Mutex baselines_mu_;
  std::unique_ptr<BaselineStore> store_ ABSL_GUARDED_BY(baselines_mu_);
};

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_MONITOR_H_
