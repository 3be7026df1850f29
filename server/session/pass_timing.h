// When a pass started and how much worker time its messages and its Finish
// took: the response's Timing, kept the same way by every kind of pass.
#ifndef ATTNROLL_SERVER_SESSION_PASS_TIMING_H_
#define ATTNROLL_SERVER_SESSION_PASS_TIMING_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.pb.h"

namespace attnroll::session {

class PassTiming {
 public:
  PassTiming() : started_(absl::Now()) {}
  // Adds the time since `since` (the start of a step) to the compute time.
  void AddCompute(absl::Time since) { compute_ += absl::Now() - since; }
  // Ends the last step (begun at `since`) and writes the totals.
  void Stamp(absl::Time since, v1::Timing* timing) {
    const absl::Time end = absl::Now();
    compute_ += end - since;
    timing->set_total_seconds(absl::ToDoubleSeconds(end - started_));
    timing->set_compute_seconds(absl::ToDoubleSeconds(compute_));
  }

 private:
  absl::Time started_;
  absl::Duration compute_;
};

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_PASS_TIMING_H_
