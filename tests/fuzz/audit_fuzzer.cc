// The messages of an Audit call, each parsed from the bytes the server would
// receive (an AuditRequest), handled in the order AuditReactor handles them:
// the header opens the audit (AuditSession::Create), map items are compared
// and aggregated (AddItem), attention items open a baseline and a candidate
// pass from pass_begin's header, take their pass_layer chunks and are
// finished and compared at pass_end (AddPassItem), and the end builds the
// report. A refused item is answered in-band and the audit goes on, as in
// the server; a call-level error ends the input.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnroll/v1/audit.pb.h"
#include "server/session/audit_session.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/pass_driver.h"

namespace attnroll::fuzz {
namespace {

struct PassItem {
  std::string id, group;
  PassDriver baseline{/*check_memory=*/false}, candidate{/*check_memory=*/false};
  bool opened = false;
};

void CheckItem(const v1::AuditItemResult& r) {
  Require(!r.has_error() || !r.error().message().empty(), "a refused item says why");
}

int Run(const uint8_t* data, size_t size) {
  std::unique_ptr<session::AuditSession> audit;
  std::unique_ptr<PassItem> current;
  for (const std::string& bytes : SplitMessages(data, size)) {
    v1::AuditRequest request;
    if (!request.ParseFromString(bytes)) return 0;
    if (request.has_end()) {
      if (audit == nullptr || current != nullptr) return 0;
      absl::StatusOr<v1::AuditReport> report = audit->Report();
      if (!report.ok()) {
        Require(!report.status().message().empty(), "a refused report says why");
        return 0;
      }
      Require(report->overall().items() >= 0, "a report counts its items");
      return 0;
    }
    if (request.has_header()) {
      if (audit != nullptr) return 0;
      absl::StatusOr<std::unique_ptr<session::AuditSession>> s =
          session::AuditSession::Create(request.header(), Limits());
      if (!s.ok()) return 0;
      audit = *std::move(s);
      Require(audit->working_bytes(kThreads) > 0, "an audit reserves memory");
      continue;
    }
    if (audit == nullptr) return 0;
    if (request.has_item()) {
      CheckItem(audit->AddItem(request.item()));
    } else if (request.has_pass_begin()) {
      if (current != nullptr) return 0;
      current = std::make_unique<PassItem>();
      current->id = request.pass_begin().id();
      current->group = request.pass_begin().group();
      current->opened = current->baseline.Open(request.pass_begin().pass()) &&
                        current->candidate.Open(request.pass_begin().pass());
    } else if (request.has_pass_layer()) {
      if (current == nullptr) return 0;
      if (current->opened) {
        PassDriver& side = request.pass_layer().candidate() ? current->candidate : current->baseline;
        (void)side.Add(request.pass_layer().layer(), 0);
      }
    } else if (request.has_pass_end()) {
      if (current == nullptr) return 0;
      std::unique_ptr<PassItem> item = std::move(current);
      const bool ok = item->opened && item->baseline.status().ok() && item->candidate.status().ok();
      CheckItem(ok ? audit->AddPassItem(item->id, item->group, *item->baseline.pass(),
                                        *item->candidate.pass(), session::FinishContext())
                   : session::AuditSession::FailedItem(
                         item->id, !item->baseline.status().ok() ? item->baseline.status()
                                                                 : item->candidate.status()));
    } else {
      return 0;
    }
  }
  return 0;
}

}  // namespace
}  // namespace attnroll::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return attnroll::fuzz::Run(data, size);
}
