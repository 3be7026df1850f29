#include "client/cpp/tensor_encode.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <Eigen/Core>

#include "client/cpp/half_encode.h"

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
  if (dtype == v1::DTYPE_FP32) {  // one pass: no zero-fill before the copy
    out->append(reinterpret_cast<const char*>(src), count * 4);
    return;
  }
  if (dtype != v1::DTYPE_FP16 && dtype != v1::DTYPE_BF16) return;
  out->reserve(out->size() + count * 2);
  // Encoded a block at a time into a small buffer (in cache), then appended.
  constexpr size_t kBlock = 2048;
  uint16_t block[kBlock];
  for (size_t i0 = 0; i0 < count; i0 += kBlock) {
    const size_t n = std::min(kBlock, count - i0);
    const float* in = src + i0;
    if (dtype == v1::DTYPE_FP16) {
      EncodeHalf(in, n, block);
    } else {
      for (size_t i = 0; i < n; ++i) block[i] = Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(in[i]));
    }
    out->append(reinterpret_cast<const char*>(block), n * 2);
  }
}

}  // namespace attnroll::client
