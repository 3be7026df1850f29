#include "server/session/result_tensors.h"

namespace attnroll::session {

void FloatTensor(const float* values, size_t count, const std::vector<int64_t>& shape, v1::Tensor* out) {
  out->set_dtype(v1::DTYPE_FP32);
  out->clear_shape();
  for (int64_t d : shape) out->add_shape(d);
  out->mutable_data()->assign(reinterpret_cast<const char*>(values), count * sizeof(float));
}

}  // namespace attnroll::session
