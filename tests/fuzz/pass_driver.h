// One pass driven as the server drives it, for the fuzz targets: a header
// planned and started, layer chunks added in order, Finish at the end; the
// first refusal ends the pass. Checks on the way that the memory the pass
// holds stays within its plan's working_bytes (what admission reserved).
#ifndef ATTNROLL_TESTS_FUZZ_PASS_DRIVER_H_
#define ATTNROLL_TESTS_FUZZ_PASS_DRIVER_H_

#include <sanitizer/allocator_interface.h>

#include <cstdint>
#include <cstdio>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnroll/v1/attnroll.pb.h"
#include "server/session/pass.h"
#include "tests/fuzz/fuzz_input.h"

namespace attnroll::fuzz {

class PassDriver {
 public:
  // `check_memory`: only when this is the one pass the process holds (the
  // audit target holds two at once, whose figures would mix).
  explicit PassDriver(bool check_memory = true) : check_memory_(check_memory) {}

  // Bookkeeping beyond the plan's figures (vector headers, names, the
  // response's own fields).
  static constexpr int64_t kSlackBytes = 64 << 10;

  // Plans and starts the pass; false (and status() says why) if refused.
  bool Open(const v1::PassHeader& header) {
    absl::StatusOr<session::PlannedPass> plan = session::PlanFromHeader(header, Limits(), kThreads);
    if (!plan.ok()) return Fail(plan.status());
    promised_ = plan->working_bytes();
    Require(promised_ > 0, "a plan's working_bytes is positive");
    base_ = Allocated();
    pass_ = std::move(*plan).Start();
    CheckHeld(0);
    return true;
  }

  // The next layer message; `message_bytes` is what the caller's copy of the
  // message holds (allocated after Open), not the pass's.
  bool Add(const v1::LayerChunk& chunk, int64_t message_bytes) {
    if (!status_.ok() || pass_ == nullptr) return false;
    if (absl::Status s = pass_->AddChunk(chunk); !s.ok()) return Fail(s);
    CheckHeld(message_bytes);
    return true;
  }

  absl::StatusOr<v1::ExplainResponse> Finish() {
    if (!status_.ok()) return status_;
    if (pass_ == nullptr) return absl::FailedPreconditionError("no pass");
    absl::StatusOr<v1::ExplainResponse> r = pass_->Finish(session::FinishContext());
    if (!r.ok()) Fail(r.status());
    CheckHeld(0);  // the response counts: the plan includes it
    return r;
  }

  session::Pass* pass() { return pass_.get(); }
  const absl::Status& status() const { return status_; }
  static int64_t Allocated() { return static_cast<int64_t>(__sanitizer_get_current_allocated_bytes()); }

 private:
  bool Fail(const absl::Status& s) {
    Require(!s.message().empty(), "a refusal says why");
    status_ = s;
    return false;
  }
  void CheckHeld(int64_t not_ours) {
    if (!check_memory_) return;
    const int64_t held = Allocated() - base_ - not_ours;
    if (held > promised_ + kSlackBytes) {
      std::fprintf(stderr, "the pass holds %lld bytes, its plan promised %lld\n",
                   static_cast<long long>(held), static_cast<long long>(promised_));
      Require(false, "a pass stays within its plan's working_bytes");
    }
  }

  const bool check_memory_;
  std::unique_ptr<session::Pass> pass_;
  absl::Status status_;
  int64_t promised_ = 0, base_ = 0;
};

}  // namespace attnroll::fuzz

#endif  // ATTNROLL_TESTS_FUZZ_PASS_DRIVER_H_
