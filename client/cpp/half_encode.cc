#include "client/cpp/half_encode.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include <Eigen/Core>

namespace attnroll::client {

void EncodeHalf(const float* src, size_t count, uint16_t* dst) {
  size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  // Round to nearest, ties to even: what Eigen::half's conversion does.
  for (; i + 8 <= count; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
#endif
  for (; i < count; ++i) dst[i] = Eigen::numext::bit_cast<uint16_t>(Eigen::half(src[i]));
}

}  // namespace attnroll::client
