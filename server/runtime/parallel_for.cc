#include "server/runtime/parallel_for.h"

#include <atomic>
#include <memory>

#include "absl/synchronization/mutex.h"

namespace attnroll::runtime {
namespace {

// Shared by the caller and its helpers; a helper that starts after the caller
// has returned finds `closed` and leaves without touching anything else.
struct Shared {
  std::atomic<int64_t> next{0};
  int64_t num_items = 0;
  std::function<bool()> stop;
  std::function<void(const ClaimFn&)> worker;
  absl::Mutex mu;
  int active ABSL_GUARDED_BY(mu) = 0;
  bool closed ABSL_GUARDED_BY(mu) = false;
};

}  // namespace

void ParallelFor(WorkerPool* pool, int helpers, int64_t num_items, const std::function<bool()>& stop,
                 const std::function<void(const ClaimFn& claim)>& worker) {
  auto shared = std::make_shared<Shared>();
  shared->num_items = num_items;
  shared->stop = stop;
  shared->worker = worker;
  const ClaimFn claim = [s = shared.get()](int64_t* i) {
    if (s->stop && s->stop()) return false;
    const int64_t k = s->next.fetch_add(1);
    if (k >= s->num_items) return false;
    *i = k;
    return true;
  };
  // Helpers step aside (between items) as soon as short work waits for a
  // worker, so a long analysis never keeps small passes waiting.
  const ClaimFn helper_claim = [claim, pool](int64_t* i) { return !pool->ShortWorkWaiting() && claim(i); };
  for (int h = 0; pool != nullptr && h < helpers && h + 1 < num_items; ++h) {
    pool->Offer([shared, helper_claim] {
      {
        absl::MutexLock lock(&shared->mu);
        if (shared->closed) return;
        ++shared->active;
      }
      shared->worker(helper_claim);
      absl::MutexLock lock(&shared->mu);
      --shared->active;
    });
  }
  worker(claim);
  absl::MutexLock lock(&shared->mu);
  shared->closed = true;
  Shared* s = shared.get();
  auto idle = [s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->active == 0; };
  shared->mu.Await(absl::Condition(&idle));
}

}  // namespace attnroll::runtime
