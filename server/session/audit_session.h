// One Audit call without gRPC: the header's options, an AuditAggregator, and
// the per-item work (decode both maps, compare, add). AddItem may run on
// several workers at once: the comparison runs unlocked, the aggregation
// under a mutex, so the report never depends on the order items finish.
#ifndef ATTNROLL_SERVER_SESSION_AUDIT_SESSION_H_
#define ATTNROLL_SERVER_SESSION_AUDIT_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "attnroll/v1/audit.pb.h"
#include "server/analysis/audit_report.h"
#include "server/analysis/compare.h"
#include "server/runtime/config.h"
#include "server/session/pass.h"

namespace attnroll::session {

class AuditSession {
 public:
  static absl::StatusOr<std::unique_ptr<AuditSession>> Create(const v1::AuditHeader& header,
                                                              const runtime::PassLimits& limits);

  // Memory the aggregator's maps and one item per worker can use.
  int64_t working_bytes(int workers) const;

  // An item refused before it was compared: its error, naming the item.
  static v1::AuditItemResult FailedItem(const std::string& id, const absl::Status& status);

  // Thread-safe. A refused item comes back with its error set; the audit goes on.
  // `cancelled` (may be empty) stops the comparison.
  v1::AuditItemResult AddItem(const v1::AuditItem& item, const std::function<bool()>& cancelled = {});

  // An item given as attention: finishes both passes and adds their first
  // analysis's maps of sequence 0 (thread-safe like AddItem).
  v1::AuditItemResult AddPassItem(const std::string& id, const std::string& group, Pass& baseline,
                                  Pass& candidate, const FinishContext& finish);

  // The report; with the mergeable state when the header asked for it
  // (RESOURCE_EXHAUSTED when that is over max_response_bytes).
  absl::StatusOr<v1::AuditReport> Report() const;

 private:
  AuditSession(analysis::CompareSpec spec, analysis::AuditAggregator aggregator, int64_t length,
               bool mergeable, int64_t max_response_bytes)
      : spec_(std::move(spec)),
        length_(length),
        mergeable_(mergeable),
        max_response_bytes_(max_response_bytes),
        aggregator_(std::move(aggregator)) {}

  const analysis::CompareSpec spec_;
  const int64_t length_;
  const bool mergeable_;
  const int64_t max_response_bytes_;
  mutable absl::Mutex mu_;
  analysis::AuditAggregator aggregator_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_AUDIT_SESSION_H_
