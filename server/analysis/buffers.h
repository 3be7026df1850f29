// Large float buffers (fused matrices, kept layers, rollout products) come
// from one process-wide source, so a server can pool them across passes
// (runtime::BufferPool: no page faults for a buffer used again) while the
// math itself stays free of threads and I/O. The default source is the heap.
#ifndef ATTNROLL_SERVER_ANALYSIS_BUFFERS_H_
#define ATTNROLL_SERVER_ANALYSIS_BUFFERS_H_

#include <cstddef>
#include <utility>

#include "server/analysis/types.h"

namespace attnroll::analysis {

class BufferSource {
 public:
  virtual ~BufferSource() = default;
  // At least `floats` floats, 64-byte aligned, contents unspecified.
  virtual float* Allocate(size_t floats) = 0;
  // Gives back a buffer from Allocate(floats) of this source.
  virtual void Release(float* data, size_t floats) = 0;
};

// The heap (64-byte aligned new/delete).
BufferSource& HeapBuffers();
// The source new buffers come from; null restores the heap. Set it before any
// buffer is allocated from it and keep the source alive while buffers from it
// exist (every Buffer returns to the source it came from).
void SetBufferSource(BufferSource* source);
BufferSource& CurrentBufferSource();

// A move-only buffer of floats from the current source, returned on destruction.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t floats);
  ~Buffer() { Reset(); }
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  float* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return data_ == nullptr; }
  void Reset();
  // The first rows * cols floats as a row-major matrix.
  Eigen::Map<MatrixF> Matrix(Eigen::Index rows, Eigen::Index cols) const {
    return Eigen::Map<MatrixF>(data_, rows, cols);
  }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
  BufferSource* source_ = nullptr;
};

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_BUFFERS_H_
