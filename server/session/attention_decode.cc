#include "server/session/attention_decode.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>


#include "absl/strings/str_cat.h"

namespace attnroll::session {

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

// The exact, slow check of one row, for the message (and borderline rows).
absl::Status CheckRowExactly(const float* row, int cols, int i, float tolerance, bool causal,
                             const BlockLocation& where) {
  auto where_str = [&] {
    return absl::StrCat("attention (layer ", where.layer, ", head ", where.head, ", sequence ",
                        where.sequence, ", row ", i, ")");
  };
  double sum = 0.0;
  for (int j = 0; j < cols; ++j) {
    const float v = row[j];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_str(), ": expected finite values, got ", v, " at column ", j));
    }
    if (v < 0.0f) {
      return absl::InvalidArgumentError(absl::StrCat(
          where_str(), ": expected probabilities >= 0, got ", v, " at column ", j));
    }
    if (causal && j > i && v > tolerance) {
      return absl::InvalidArgumentError(absl::StrCat(
          where_str(), ": causal layout expects no attention above the diagonal, got ", v,
          " at column ", j));
    }
    sum += v;
  }
  if (std::abs(sum - 1.0) > tolerance) {
    return absl::InvalidArgumentError(absl::StrCat(
        where_str(), ": expected the row over the ", cols, " valid tokens to sum to 1 +- ",
        tolerance, ", got ", sum));
  }
  return absl::OkStatus();
}

}  // namespace

analysis::WireType WireTypeOf(int dtype) {
  switch (dtype) {
    case v1::DTYPE_FP16: return analysis::WireType::kF16;
    case v1::DTYPE_BF16: return analysis::WireType::kBF16;
    default: return analysis::WireType::kF32;
  }
}

void DecodeBlock(int dtype, const std::string& data, int64_t offset, int rows, int cols,
                 int64_t stride, float* dst) {
  const size_t size = DTypeSize(dtype);
  analysis::DecodeRows(WireTypeOf(dtype), data.data() + offset * size, stride, rows, cols, dst, cols);
}

std::vector<float> DecodeAllValues(const v1::Tensor& t) {
  const int64_t count = static_cast<int64_t>(t.data().size() / DTypeSize(t.dtype()));
  std::vector<float> out(count);
  if (count > 0) DecodeBlock(t.dtype(), t.data(), 0, 1, static_cast<int>(count), count, out.data());
  return out;
}

absl::Status ValidateAttentionRows(const float* a, int rows, int cols, int64_t stride, int row0,
                                   float tolerance, bool causal, const BlockLocation& where,
                                   const analysis::RowStats* stats) {
  for (int r = 0; r < rows; ++r) {
    const analysis::RowStats& st = stats[r];
    if (analysis::PassesFastCheck(st, tolerance, causal)) continue;
    if (absl::Status s = CheckRowExactly(a + r * stride, cols, row0 + r, tolerance, causal, where);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateWireRows(int dtype, const char* data, int64_t stride, int rows, int cols,
                              int row0, float tolerance, bool causal, const BlockLocation& where,
                              const analysis::RowStats* stats) {
  const int64_t size = static_cast<int64_t>(DTypeSize(dtype));
  std::vector<float> row;
  for (int r = 0; r < rows; ++r) {
    const analysis::RowStats& st = stats[r];
    if (analysis::PassesFastCheck(st, tolerance, causal)) continue;
    row.resize(cols);
    analysis::DecodeRows(WireTypeOf(dtype), data + r * stride * size, stride, 1, cols, row.data(), cols);
    if (absl::Status s = CheckRowExactly(row.data(), cols, row0 + r, tolerance, causal, where); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateGradientRows(const float* g, int rows, int cols, int64_t stride, int row0,
                                  const BlockLocation& where) {
  for (int r = 0; r < rows; ++r) {
    const float* row = g + r * stride;
    // x - x is 0 for every finite x and NaN for NaN and +-Inf.
    float probe = 0.0f;
#pragma omp simd reduction(+ : probe)
    for (int j = 0; j < cols; ++j) probe += row[j] - row[j];
    if (probe == 0.0f) continue;
    for (int j = 0; j < cols; ++j) {
      if (!std::isfinite(row[j])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "gradient (layer ", where.layer, ", head ", where.head, ", sequence ", where.sequence,
            ", row ", row0 + r, "): expected finite values, got ", row[j], " at column ", j));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAttentionBlock(const float* a, int m, float tolerance, bool causal,
                                    const BlockLocation& where) {
  std::vector<analysis::RowStats> stats(m);
  analysis::ComputeRowStats(analysis::ConstMatrixView(a, m, m, Eigen::OuterStride<>(m)), 0, causal,
                            stats.data());
  return ValidateAttentionRows(a, m, m, m, 0, tolerance, causal, where, stats.data());
}

}  // namespace attnroll::session
