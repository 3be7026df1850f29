// float32 -> IEEE 754 half-precision bits, rounded to nearest, ties to even
// (the FP16 wire, and what numpy's astype(float16) gives). Free of protobuf,
// so the Python client's native library uses it too.
#ifndef ATTNROLL_CLIENT_CPP_HALF_ENCODE_H_
#define ATTNROLL_CLIENT_CPP_HALF_ENCODE_H_

#include <cstddef>
#include <cstdint>

namespace attnroll::client {

void EncodeHalf(const float* src, size_t count, uint16_t* dst);

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_HALF_ENCODE_H_
