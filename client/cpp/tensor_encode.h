// float32 -> wire bytes (little-endian FP32, or FP16/BF16 rounded to nearest even).
#ifndef ATTNROLL_CLIENT_CPP_TENSOR_ENCODE_H_
#define ATTNROLL_CLIENT_CPP_TENSOR_ENCODE_H_

#include <cstddef>
#include <string>

#include "attnroll/v1/tensor.pb.h"

namespace attnroll::client {

size_t WireSize(v1::DType dtype);  // bytes per element, 0 if unknown

// Appends `count` values from src to *out, encoded as `dtype`.
void AppendEncoded(v1::DType dtype, const float* src, size_t count, std::string* out);

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_TENSOR_ENCODE_H_
