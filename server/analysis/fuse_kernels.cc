// The portable build of the kernels (the compiler's own flags), and the
// run-time choice between it and the AVX2 build.
#include "server/analysis/fuse_kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <Eigen/Core>

namespace attnroll::analysis {
namespace {

float HalfToFloat(uint16_t bits) {
  return Eigen::half_impl::half_to_float(Eigen::half_impl::raw_uint16_to_half(bits));
}

// Row `r` of `rows` decoded to fp32: in place for fp32, else into `scratch`.
const float* RowOf(WireType type, const WireRows& rows, int r, int cols, float* scratch) {
  if (type == WireType::kF32) return static_cast<const float*>(rows.data) + r * rows.stride;
  kernels::DecodePortable(type, static_cast<const char*>(rows.data) + 2 * r * rows.stride, 0, 1,
                          cols, scratch, 0);
  return scratch;
}

// Statistics of one row: sum and min over every column, max over [split, cols).
void RowStatsOf(const float* __restrict v, int cols, int split, bool causal, RowStats* st) {
  float sum = 0.0f, mn = INFINITY, up = 0.0f;
#pragma omp simd reduction(+ : sum) reduction(min : mn)
  for (int j = 0; j < split; ++j) {
    sum += v[j];
    mn = v[j] < mn ? v[j] : mn;
  }
#pragma omp simd reduction(+ : sum) reduction(min : mn) reduction(max : up)
  for (int j = split; j < cols; ++j) {
    sum += v[j];
    mn = v[j] < mn ? v[j] : mn;
    up = v[j] > up ? v[j] : up;
  }
  st->sum = sum;
  st->min = mn;
  st->upper_max = causal ? up : 0.0f;
}

template <typename Op>
void Combine(float* __restrict acc, const float* __restrict v, int n, float w, bool weighted,
             bool first, Op op) {
  if (first) {
    if (weighted) {
#pragma omp simd
      for (int j = 0; j < n; ++j) acc[j] = w * v[j];
    } else {
      std::memcpy(acc, v, static_cast<size_t>(n) * sizeof(float));
    }
    return;
  }
  if (weighted) {
#pragma omp simd
    for (int j = 0; j < n; ++j) {
      const float t = w * v[j];
      acc[j] = op(acc[j], t);
    }
  } else {
#pragma omp simd
    for (int j = 0; j < n; ++j) acc[j] = op(acc[j], v[j]);
  }
}

}  // namespace

namespace kernels {

void DecodePortable(WireType type, const void* src, int64_t src_stride, int rows, int cols,
                    float* dst, int64_t dst_stride) {
  for (int r = 0; r < rows; ++r) {
    float* out = dst + r * dst_stride;
    switch (type) {
      case WireType::kF32:
        std::memcpy(out, static_cast<const float*>(src) + r * src_stride,
                    static_cast<size_t>(cols) * sizeof(float));
        break;
      case WireType::kF16: {
        const char* in = static_cast<const char*>(src) + 2 * r * src_stride;
        for (int c = 0; c < cols; ++c) {
          uint16_t bits;
          std::memcpy(&bits, in + 2 * c, 2);
          out[c] = HalfToFloat(bits);
        }
        break;
      }
      case WireType::kBF16: {
        // bf16 is the top half of an fp32: decoding is exact.
        const char* in = static_cast<const char*>(src) + 2 * r * src_stride;
        for (int c = 0; c < cols; ++c) {
          uint16_t bits;
          std::memcpy(&bits, in + 2 * c, 2);
          const uint32_t wide = static_cast<uint32_t>(bits) << 16;
          std::memcpy(out + c, &wide, 4);
        }
        break;
      }
    }
  }
}

void FusePortable(const FuseTask& t) {
  static thread_local std::vector<float> scratch;
  if (t.type != WireType::kF32) {
    scratch.resize(static_cast<size_t>(kMaxFuseGroup) * std::max(t.cols, 1));
  }
  const bool weighted = t.op == FuseOp::kWeightedSum;
  for (int r = 0; r < t.rows; ++r) {
    const int i = t.row0 + r;
    const int split = t.causal || t.lower_only ? std::min(i + 1, t.cols) : t.cols;
    const int fuse_cols = t.lower_only ? split : t.cols;
    float* acc = t.acc == nullptr ? nullptr : t.acc + r * t.acc_stride;
    for (int g = 0; g < t.heads; ++g) {
      const float* v = RowOf(t.type, t.in[g], r, t.cols, scratch.data() + g * t.cols);
      if (t.stats != nullptr) RowStatsOf(v, t.cols, split, t.causal, &t.stats[g * t.stats_stride + r]);
      const bool first = t.init && g == 0;
      const float w = weighted ? t.weights[g] : 1.0f;
      switch (t.op) {
        case FuseOp::kStatsOnly:
          break;
        case FuseOp::kSum:
        case FuseOp::kWeightedSum:
          Combine(acc, v, fuse_cols, w, weighted, first, [](float d, float x) { return d + x; });
          break;
        case FuseOp::kMax:
          Combine(acc, v, fuse_cols, w, false, first, [](float d, float x) { return x > d ? x : d; });
          break;
        case FuseOp::kMin:
          Combine(acc, v, fuse_cols, w, false, first, [](float d, float x) { return x < d ? x : d; });
          break;
      }
    }
  }
}

}  // namespace kernels

const char* KernelIsaName(KernelIsa isa) {
  return isa == KernelIsa::kAvx2 ? "avx2" : "portable";
}

bool KernelIsaAvailable(KernelIsa isa) {
  if (isa == KernelIsa::kPortable) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

namespace {

std::atomic<int>& ActiveIsa() {
  static std::atomic<int> isa{[] {
    const char* env = std::getenv("ATTNROLL_KERNELS");
    if (env != nullptr && std::strcmp(env, "portable") == 0) return static_cast<int>(KernelIsa::kPortable);
    return static_cast<int>(KernelIsaAvailable(KernelIsa::kAvx2) ? KernelIsa::kAvx2 : KernelIsa::kPortable);
  }()};
  return isa;
}

}  // namespace

KernelIsa ActiveKernelIsa() { return static_cast<KernelIsa>(ActiveIsa().load(std::memory_order_relaxed)); }

void SetActiveKernelIsa(KernelIsa isa) { ActiveIsa().store(static_cast<int>(isa)); }

void FuseRowsWith(KernelIsa isa, const FuseTask& task) {
#if defined(__x86_64__)
  if (isa == KernelIsa::kAvx2) return kernels::FuseAvx2(task);
#endif
  kernels::FusePortable(task);
}

void FuseRows(const FuseTask& task) { FuseRowsWith(ActiveKernelIsa(), task); }

void DecodeRowsWith(KernelIsa isa, WireType type, const void* src, int64_t src_stride, int rows,
                    int cols, float* dst, int64_t dst_stride) {
#if defined(__x86_64__)
  if (isa == KernelIsa::kAvx2) return kernels::DecodeAvx2(type, src, src_stride, rows, cols, dst, dst_stride);
#endif
  kernels::DecodePortable(type, src, src_stride, rows, cols, dst, dst_stride);
}

void DecodeRows(WireType type, const void* src, int64_t src_stride, int rows, int cols, float* dst,
                int64_t dst_stride) {
  DecodeRowsWith(ActiveKernelIsa(), type, src, src_stride, rows, cols, dst, dst_stride);
}

}  // namespace attnroll::analysis
