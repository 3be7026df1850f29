// Splits one pass's independent items (e.g. the max flows of attention flow)
// over the calling worker and idle pool workers. The caller always takes part,
// so a full pool never blocks it: helpers that cannot be queued, or start
// late, simply do nothing, and a helper leaves (between items) as soon as
// short work waits for a worker.
#ifndef ATTNROLL_SERVER_RUNTIME_PARALLEL_FOR_H_
#define ATTNROLL_SERVER_RUNTIME_PARALLEL_FOR_H_

#include <cstdint>
#include <functional>

#include "server/runtime/worker_pool.h"

namespace attnroll::runtime {

// Claims the next item index into *i; false when none are left (or stop()).
using ClaimFn = std::function<bool(int64_t* i)>;

// Runs `worker(claim)` on the calling thread and on up to `helpers` pool
// threads; every participant loops on claim() until it returns false. Each
// participant can keep its own scratch inside `worker`. Returns when every
// participant is done. `stop` (may be empty) is polled before each claim.
void ParallelFor(WorkerPool* pool, int helpers, int64_t num_items, const std::function<bool()>& stop,
                 const std::function<void(const ClaimFn& claim)>& worker);

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_PARALLEL_FOR_H_
