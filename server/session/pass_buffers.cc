#include "server/session/pass_buffers.h"

#include "server/analysis/buffers.h"

namespace attnroll::session {
namespace {

class PooledSource : public analysis::BufferSource {
 public:
  float* Allocate(size_t floats) override {
    return static_cast<float*>(PassBufferPool().Allocate(floats * sizeof(float)));
  }
  void Release(float* data, size_t floats) override {
    PassBufferPool().Release(data, floats * sizeof(float));
  }
};

}  // namespace

runtime::BufferPool& PassBufferPool() {
  static runtime::BufferPool* pool = new runtime::BufferPool(0);
  return *pool;
}

void UsePooledPassBuffers(int64_t max_cached_bytes) {
  static PooledSource* source = new PooledSource;
  PassBufferPool().SetMaxCachedBytes(max_cached_bytes);
  analysis::SetBufferSource(source);
}

}  // namespace attnroll::session
