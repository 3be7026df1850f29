// The large buffers of every pass (analysis::Buffer) from one process-wide
// runtime::BufferPool, so that passes of the same shape reuse each other's
// memory instead of faulting in fresh pages.
#ifndef ATTNROLL_SERVER_SESSION_PASS_BUFFERS_H_
#define ATTNROLL_SERVER_SESSION_PASS_BUFFERS_H_

#include <cstdint>

#include "server/runtime/buffer_pool.h"

namespace attnroll::session {

// The pool (created on first use, never destroyed: buffers may be released late).
runtime::BufferPool& PassBufferPool();

// From now on every analysis buffer comes from PassBufferPool(), which keeps
// up to `max_cached_bytes` of released buffers. Idempotent (the cap is updated).
void UsePooledPassBuffers(int64_t max_cached_bytes);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_PASS_BUFFERS_H_
