#include "server/service/attention_decode.h"

#include <cmath>
#include <cstring>
#include <string>

#include <Eigen/Core>

#include "absl/strings/str_cat.h"

namespace attnroll::service {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire is little-endian; decoding assumes a little-endian host");

size_t DTypeSize(int dtype) {
  switch (dtype) {
    case v1::DTYPE_FP32: return 4;
    case v1::DTYPE_FP16:
    case v1::DTYPE_BF16: return 2;
    default: return 0;
  }
}

const char* DTypeName(int dtype) {
  switch (dtype) {
    case v1::DTYPE_FP32: return "FP32";
    case v1::DTYPE_FP16: return "FP16";
    case v1::DTYPE_BF16: return "BF16";
    default: return "UNKNOWN";
  }
}

float DefaultRowSumTolerance(int dtype) {
  switch (dtype) {
    case v1::DTYPE_FP16: return 4e-3f;
    case v1::DTYPE_BF16: return 2e-2f;
    default: return 1e-3f;
  }
}

absl::Status CheckTensorBytes(const v1::Tensor& tensor, absl::string_view field) {
  const size_t size = DTypeSize(tensor.dtype());
  if (size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".dtype: expected FP32, FP16 or BF16, got ", static_cast<int>(tensor.dtype())));
  }
  uint64_t count = 1;
  for (int i = 0; i < tensor.shape_size(); ++i) {
    const int64_t d = tensor.shape(i);
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape[", i, "]: expected >= 0, got ", d));
    }
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape: element count overflows 64 bits"));
    }
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(size), &bytes) ||
      bytes != tensor.data().size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".data: expected ", count, " elements x ", size, " bytes (", DTypeName(tensor.dtype()),
        ") = ", count * size, " bytes, got ", tensor.data().size()));
  }
  return absl::OkStatus();
}

namespace {

float HalfToFloat(uint16_t bits) {
  return Eigen::half_impl::half_to_float(Eigen::half_impl::raw_uint16_to_half(bits));
}

// bf16 is the top half of an fp32: decoding is exact.
float Bfloat16ToFloat(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

template <float (*Convert)(uint16_t)>
void DecodeHalfBlock(const char* src, int rows, int cols, int64_t stride, float* dst) {
  for (int r = 0; r < rows; ++r) {
    const char* row = src + r * stride * 2;
    float* out = dst + static_cast<int64_t>(r) * cols;
    for (int c = 0; c < cols; ++c) {
      uint16_t bits;
      std::memcpy(&bits, row + 2 * c, 2);
      out[c] = Convert(bits);
    }
  }
}

}  // namespace

void DecodeBlock(int dtype, const std::string& data, int64_t offset, int rows, int cols,
                 int64_t stride, float* dst) {
  const size_t size = DTypeSize(dtype);
  const char* src = data.data() + offset * size;
  switch (dtype) {
    case v1::DTYPE_FP32:
      for (int r = 0; r < rows; ++r) {
        std::memcpy(dst + static_cast<int64_t>(r) * cols, src + r * stride * 4, cols * 4);
      }
      break;
    case v1::DTYPE_FP16:
      DecodeHalfBlock<HalfToFloat>(src, rows, cols, stride, dst);
      break;
    case v1::DTYPE_BF16:
      DecodeHalfBlock<Bfloat16ToFloat>(src, rows, cols, stride, dst);
      break;
  }
}

absl::Status ValidateAttentionBlock(const float* a, int m, float tolerance, bool causal,
                                    const BlockLocation& where) {
  auto where_str = [&](int row) {
    return absl::StrCat("attention (layer ", where.layer, ", head ", where.head, ", sequence ",
                        where.sequence, ", row ", row, ")");
  };
  for (int i = 0; i < m; ++i) {
    const float* row = a + static_cast<int64_t>(i) * m;
    double sum = 0.0;
    for (int j = 0; j < m; ++j) {
      const float v = row[j];
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where_str(i), ": expected finite values, got ", v, " at column ", j));
      }
      if (v < 0.0f) {
        return absl::InvalidArgumentError(absl::StrCat(
            where_str(i), ": expected probabilities >= 0, got ", v, " at column ", j));
      }
      if (causal && j > i && v > tolerance) {
        return absl::InvalidArgumentError(absl::StrCat(
            where_str(i), ": causal layout expects no attention above the diagonal, got ", v,
            " at column ", j));
      }
      sum += v;
    }
    if (std::abs(sum - 1.0) > tolerance) {
      return absl::InvalidArgumentError(absl::StrCat(
          where_str(i), ": expected the row over the ", m, " valid tokens to sum to 1 +- ",
          tolerance, ", got ", sum));
    }
  }
  return absl::OkStatus();
}

}  // namespace attnroll::service
