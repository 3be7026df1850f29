// Results of the math as FP32 wire tensors (the one place that copies floats
// into a v1::Tensor).
#ifndef ATTNROLL_SERVER_SESSION_RESULT_TENSORS_H_
#define ATTNROLL_SERVER_SESSION_RESULT_TENSORS_H_

#include <cstdint>
#include <vector>

#include "attnroll/v1/tensor.pb.h"
#include "server/analysis/types.h"

namespace attnroll::session {

void FloatTensor(const float* values, size_t count, const std::vector<int64_t>& shape, v1::Tensor* out);

inline void ToTensor(const analysis::Maps& maps, v1::Tensor* out) {
  FloatTensor(maps.values.data(), maps.values.size(), maps.shape, out);
}

inline void ToTensor(const analysis::MatrixF& m, v1::Tensor* out) {
  FloatTensor(m.data(), static_cast<size_t>(m.size()), {m.rows(), m.cols()}, out);
}

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_RESULT_TENSORS_H_
