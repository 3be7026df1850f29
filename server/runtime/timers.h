// One thread that runs short callbacks at given times: idle timeouts and
// admission deadlines. A callback must not block or compute (it cancels a
// call, or hands work to the pool); Cancel waits for a callback that is
// already running, so after it returns the callback's captures may go.
#ifndef ATTNROLL_SERVER_RUNTIME_TIMERS_H_
#define ATTNROLL_SERVER_RUNTIME_TIMERS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace attnroll::runtime {

class Timers {
 public:
  using Id = uint64_t;  // 0 is never an id

  Timers();
  ~Timers();  // callbacks not yet run are dropped
  Timers(const Timers&) = delete;
  Timers& operator=(const Timers&) = delete;

  Id Schedule(absl::Time when, std::function<void()> callback);
  // True if the callback was removed before it ran; false if it has run (or
  // is running: then Cancel returns when it is done).
  bool Cancel(Id id);

 private:
  void Run();

  absl::Mutex mu_;
  // (when, id) -> callback, earliest first.
  std::map<std::pair<absl::Time, Id>, std::function<void()>> due_ ABSL_GUARDED_BY(mu_);
  std::map<Id, absl::Time> when_ ABSL_GUARDED_BY(mu_);
  Id next_id_ ABSL_GUARDED_BY(mu_) = 1;
  Id running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_TIMERS_H_
