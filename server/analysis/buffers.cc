#include "server/analysis/buffers.h"

#include <atomic>
#include <new>
#include <utility>

namespace attnroll::analysis {
namespace {

class Heap : public BufferSource {
 public:
  float* Allocate(size_t floats) override {
    return static_cast<float*>(::operator new(floats * sizeof(float), std::align_val_t{64}));
  }
  void Release(float* data, size_t) override { ::operator delete(data, std::align_val_t{64}); }
};

std::atomic<BufferSource*> current{nullptr};

}  // namespace

BufferSource& HeapBuffers() {
  static Heap* heap = new Heap;  // never destroyed: buffers may outlive statics
  return *heap;
}

void SetBufferSource(BufferSource* source) { current.store(source); }

BufferSource& CurrentBufferSource() {
  BufferSource* s = current.load();
  return s != nullptr ? *s : HeapBuffers();
}

Buffer::Buffer(size_t floats) {
  if (floats == 0) return;
  source_ = &CurrentBufferSource();
  data_ = source_->Allocate(floats);
  size_ = floats;
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    source_ = std::exchange(other.source_, nullptr);
  }
  return *this;
}

void Buffer::Reset() {
  if (data_ != nullptr) source_->Release(data_, size_);
  data_ = nullptr;
  size_ = 0;
  source_ = nullptr;
}

}  // namespace attnroll::analysis
