// The audit report and its mergeable state as messages: the analysis room's
// AuditReport / AuditState <-> attnroll.v1's. Shared by the server (which
// builds the report of an Audit call) and the CLI's audit-merge (which merges
// the states of partial audits offline), so both give the same bytes.
#ifndef ATTNROLL_PROTO_CPP_AUDIT_REPORT_PROTO_H_
#define ATTNROLL_PROTO_CPP_AUDIT_REPORT_PROTO_H_

#include "absl/status/statusor.h"
#include "attnroll/v1/audit.pb.h"
#include "server/analysis/audit_report.h"

namespace attnroll::v1 {

analysis::DriftThresholds ToDriftThresholds(const DriftThresholds& thresholds);
DriftThresholds FromDriftThresholds(const analysis::DriftThresholds& thresholds);

// The report (mean maps as FP32 tensors, [h, w] on a grid, else [n]).
void ToReportProto(const analysis::AuditReport& report, AuditReport* out);

// The state with the options it was built with.
void ToStateProto(const analysis::AuditState& state, const analysis::AuditOptions& options,
                  AuditState* out);

// The options of a state (AuditAggregator::Create checks their values).
analysis::AuditOptions StateOptions(const AuditState& state);

// The records and sums of a state. INVALID_ARGUMENT naming the field for a
// wrong count of values or a sums' byte length other than 16 * map_length.
absl::StatusOr<analysis::AuditState> FromStateProto(const AuditState& state);

}  // namespace attnroll::v1

#endif  // ATTNROLL_PROTO_CPP_AUDIT_REPORT_PROTO_H_
