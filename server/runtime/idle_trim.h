// Gives the heap's free pages back to the OS once the server has been quiet
// for a while, not after every pass. A client calling in a loop leaves the
// server idle for microseconds between its passes; trimming each time made
// every pass fault all its message buffers in again (about 700 page faults,
// a fifth of the server's time, for a 1.9 MB pass). Memory still falls back
// within `quiet` of the last pass of a burst.
#ifndef ATTNROLL_SERVER_RUNTIME_IDLE_TRIM_H_
#define ATTNROLL_SERVER_RUNTIME_IDLE_TRIM_H_

#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/runtime/timers.h"

namespace attnroll::runtime {

class IdleTrim {
 public:
  // `idle()` says whether the server is idle now (no pass in flight);
  // `trim()` hands the trim to where work runs (it must not block: it runs
  // on the timer thread). Both outlive this object.
  IdleTrim(absl::Duration quiet, Timers* timers, std::function<bool()> idle,
           std::function<void()> trim);
  ~IdleTrim();  // Stop()
  IdleTrim(const IdleTrim&) = delete;
  IdleTrim& operator=(const IdleTrim&) = delete;

  // Nothing is in flight any more (the last admission ticket was given
  // back): trim once the server has stayed idle for `quiet` since the latest
  // such call (one timer at a time). A timer that fires while the server is
  // busy again does nothing: the release that ends that busy spell calls
  // Idle again.
  void Idle();
  // Drops a trim not yet due; Idle does nothing from here on. Call it
  // before what trim() uses goes away (a Fire that is running finishes first).
  void Stop();
  // Trims handed over so far (for tests).
  int trims() const;

 private:
  void Fire();

  const absl::Duration quiet_;
  Timers* const timers_;
  const std::function<bool()> idle_;
  const std::function<void()> trim_;
  mutable absl::Mutex mu_;
  absl::Time idle_since_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  Timers::Id timer_ ABSL_GUARDED_BY(mu_) = 0;  // 0: none armed
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int trims_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_IDLE_TRIM_H_
