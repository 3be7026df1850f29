// One thread that runs a task every `interval`, and at once when poked (the
// server's SIGHUP): the checks of certificate and token files for change.
// The task runs on this thread only, never twice at once; the destructor
// waits for a running task and stops.
#ifndef ATTNROLL_SERVER_RUNTIME_PERIODIC_H_
#define ATTNROLL_SERVER_RUNTIME_PERIODIC_H_

#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace attnroll::runtime {

class Periodic {
 public:
  Periodic(absl::Duration interval, std::function<void()> task);
  ~Periodic();
  Periodic(const Periodic&) = delete;
  Periodic& operator=(const Periodic&) = delete;

  // Runs the task as soon as the thread is free (several pokes before it
  // runs: one run).
  void Poke();
  // Runs of the task so far (for tests).
  int runs() const;

 private:
  void Run();
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return poked_ || stopping_; }

  const absl::Duration interval_;
  const std::function<void()> task_;
  mutable absl::Mutex mu_;
  bool poked_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int runs_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_PERIODIC_H_
