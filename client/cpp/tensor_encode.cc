#include "client/cpp/tensor_encode.h"

#include <cstdint>
#include <cstring>

#include <Eigen/Core>

namespace attnroll::client {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire is little-endian");

size_t WireSize(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_FP32: return 4;
    case v1::DTYPE_FP16:
    case v1::DTYPE_BF16: return 2;
    default: return 0;
  }
}

void AppendEncoded(v1::DType dtype, const float* src, size_t count, std::string* out) {
  const size_t base = out->size();
  out->resize(base + count * WireSize(dtype));
  char* dst = out->data() + base;
  switch (dtype) {
    case v1::DTYPE_FP32:
      std::memcpy(dst, src, count * 4);
      break;
    case v1::DTYPE_FP16:
      for (size_t i = 0; i < count; ++i) {
        const uint16_t bits = Eigen::numext::bit_cast<uint16_t>(Eigen::half(src[i]));
        std::memcpy(dst + 2 * i, &bits, 2);
      }
      break;
    case v1::DTYPE_BF16:
      for (size_t i = 0; i < count; ++i) {
        const uint16_t bits = Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(src[i]));
        std::memcpy(dst + 2 * i, &bits, 2);
      }
      break;
    default:
      break;
  }
}

}  // namespace attnroll::client
