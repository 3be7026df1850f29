// The AVX2 + FMA + F16C build of the kernels (this file alone is compiled
// with -mavx2 -mfma -mf16c; fuse_kernels.cc runs it only on a CPU that has
// them). It includes no header with inline code of its own besides the
// intrinsics, so no AVX2 copy of a shared inline function can be chosen by
// the linker for the rest of the program; every helper has internal linkage.
#include <immintrin.h>

#include <cstdint>

#include "server/analysis/fuse_kernels.h"

namespace attnroll::analysis::kernels {
namespace {

constexpr float kInf = __builtin_inff();
// How far ahead of the loop each head's row is prefetched, into L2 (T1):
// 1 KiB. On the Intel VM of 2 December, against 256 bytes into L1 for fp32
// and none for fp16 (the earlier choice; on the VM of 1 December 1 KiB and T1
// had measured within noise of it), BERT-base and ViT-L/16 CLS passes ran
// 10-11% faster in fp32 and 9-12% in fp16 (rollout_bench, same run); 512
// bytes, 2 and 3 KiB, T0 and T2 were no better.
constexpr int kPrefetchBytes = 1024;

inline int Min(int a, int b) { return a < b ? a : b; }

// 8 values of a row from column j, decoded to fp32.
template <WireType T>
__attribute__((always_inline)) inline __m256 Load8(const char* row, int j) {
  if constexpr (T == WireType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + j);
  } else if constexpr (T == WireType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j)));
  } else {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
}

template <WireType T>
inline float Load1(const char* row, int j) {
  if constexpr (T == WireType::kF32) {
    return reinterpret_cast<const float*>(row)[j];
  } else {
    uint16_t bits;
    __builtin_memcpy(&bits, row + 2 * j, 2);
    if constexpr (T == WireType::kF16) {
      return _cvtsh_ss(bits);
    } else {
      const uint32_t wide = static_cast<uint32_t>(bits) << 16;
      float f;
      __builtin_memcpy(&f, &wide, 4);
      return f;
    }
  }
}

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float HorizontalMin(__m256 v) {
  __m128 s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_min_ps(s, _mm_movehl_ps(s, s));
  s = _mm_min_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// d op t, as the portable kernel computes it (max: t > d ? t : d). The sum
// is an FMA t * 1 + d: t * 1 is exact, so it rounds exactly as d + t does,
// but it runs on the multiply pipes, leaving the add pipes to the row sums
// (about 1.5x the throughput of two adds per value on the CPUs measured).
template <FuseOp Op>
__attribute__((always_inline)) inline __m256 Op8(__m256 d, __m256 t) {
  if constexpr (Op == FuseOp::kMax) return _mm256_max_ps(t, d);
  if constexpr (Op == FuseOp::kMin) return _mm256_min_ps(t, d);
  return _mm256_fmadd_ps(t, _mm256_set1_ps(1.0f), d);
}
template <FuseOp Op>
inline float Op1(float d, float t) {
  if constexpr (Op == FuseOp::kMax) return t > d ? t : d;
  if constexpr (Op == FuseOp::kMin) return t < d ? t : d;
  return d + t;
}

// Sets of accumulators of a group of G heads: two for small groups, so the
// sums' latency does not bound the loop; one for larger ones (two would not
// fit in the 16 registers).
constexpr int Sets(int G) { return G <= 2 ? 2 : 1; }

// Per-head accumulators of one row's statistics.
template <int G>
struct Acc {
  __m256 sum[Sets(G)][G], mn[Sets(G)][G], mx[Sets(G)][G];
};

// The last `rem` (1..7) values of a row from column j, decoded, zero beyond
// (never read past the row). For 16-bit values, a segment that ends at
// column 8 or later loads the 8 values that end it (those before column j
// are still in the row, and are masked off) and moves the wanted ones down to
// lanes 0..rem-1 (copying them through the stack instead stalled the next
// load on store forwarding: a third of the ViT-B/16 fp16 kernel's time, its
// rows being 197 long).
template <WireType T>
__attribute__((always_inline)) inline __m256 LoadTail(const char* row, int j, int rem, __m256i mask) {
  if constexpr (T == WireType::kF32) {
    return _mm256_maskload_ps(reinterpret_cast<const float*>(row) + j, mask);
  } else {
    if (j + rem >= 8) {
      const __m256 last = Load8<T>(row, j + rem - 8);
      const __m256i lanes =
          _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 - rem));
      return _mm256_and_ps(_mm256_permutevar8x32_ps(last, lanes), _mm256_castsi256_ps(mask));
    }
    alignas(16) uint16_t tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    __builtin_memcpy(tail, row + 2 * j, 2 * static_cast<size_t>(rem));
    return Load8<T>(reinterpret_cast<const char*>(tail), 0);
  }
}

// One block of 8 columns at c of G heads (lanes >= rem ignored when Tail).
template <WireType T, FuseOp Op, int G, bool Fuse, bool Upper, bool Tail>
__attribute__((always_inline)) inline void Block(const char* const* row, float* acc, bool init,
                                                 const __m256* wv, int c, int rem, __m256i mask,
                                                 __m256* sum, __m256* mn, __m256* mx) {
  __m256 v[G];
  const __m256 inf = _mm256_set1_ps(kInf);
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
    v[g] = Tail ? LoadTail<T>(row[g], c, rem, mask) : Load8<T>(row[g], c);
    sum[g] = _mm256_add_ps(sum[g], v[g]);
    const __m256 m = Tail ? _mm256_blendv_ps(inf, v[g], _mm256_castsi256_ps(mask)) : v[g];
    mn[g] = _mm256_min_ps(mn[g], m);
    if constexpr (Upper) mx[g] = _mm256_max_ps(mx[g], v[g]);  // 0 beyond rem: max >= 0 anyway
  }
  if constexpr (Fuse) {
    // The first head's term starts x or is combined into acc's value; the
    // others' loop has a fixed trip count, so it unrolls (starting it at a
    // run-time head kept the decoded values on the stack).
    const __m256 t0 = Op == FuseOp::kWeightedSum ? _mm256_mul_ps(wv[0], v[0]) : v[0];
    __m256 x;
    if (init) {
      x = t0;
    } else {
      x = Op8<Op>(Tail ? _mm256_maskload_ps(acc + c, mask) : _mm256_loadu_ps(acc + c), t0);
    }
#pragma GCC unroll 4
    for (int g = 1; g < G; ++g) {
      const __m256 t = Op == FuseOp::kWeightedSum ? _mm256_mul_ps(wv[g], v[g]) : v[g];
      x = Op8<Op>(x, t);
    }
    if (Tail) {
      _mm256_maskstore_ps(acc + c, mask, x);
    } else {
      _mm256_storeu_ps(acc + c, x);
    }
  }
}

// Columns [from, to) of one row of G heads. Fuse: combine into acc (the
// group's first head initialises it when `init`). Upper: also the max.
// One 64-byte line of each head per iteration, then blocks of 8 columns, U
// at a time (U: the sets of accumulators, used in turn); the last < 8
// columns as one masked block.
template <WireType T, FuseOp Op, int G, bool Fuse, bool Upper>
__attribute__((always_inline)) inline void Segment(const char* const* row, float* acc, bool init,
                                                   const float* w, int from, int to, Acc<G>& a) {
  constexpr int U = Sets(G);
  __m256 wv[G];
  if constexpr (Op == FuseOp::kWeightedSum) {
    for (int g = 0; g < G; ++g) wv[g] = _mm256_set1_ps(w[g]);
  }
  const __m256i none = _mm256_setzero_si256();
  int j = from;
  // One 64-byte line of each head per iteration (16 fp32 or 32 fp16/bf16
  // columns), each head's line kPrefetchBytes ahead prefetched: the wire
  // bytes sit on 4 KiB pages, where the hardware prefetchers stop at every
  // page. A prefetch past the end of a buffer is harmless (it never faults).
  constexpr int kElem = T == WireType::kF32 ? 4 : 2;
  constexpr int kLine = 64 / kElem;
  for (; j + kLine <= to; j += kLine) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) _mm_prefetch(row[g] + kElem * j + kPrefetchBytes, _MM_HINT_T1);
#pragma GCC unroll 4
    for (int u = 0; u < kLine / 8; ++u) {
      Block<T, Op, G, Fuse, Upper, false>(row, acc, init, wv, j + 8 * u, 8, none, a.sum[u % U],
                                          a.mn[u % U], a.mx[u % U]);
    }
  }
  for (; j + 8 * U <= to; j += 8 * U) {
#pragma GCC unroll 2
    for (int u = 0; u < U; ++u) {
      Block<T, Op, G, Fuse, Upper, false>(row, acc, init, wv, j + 8 * u, 8, none, a.sum[u], a.mn[u],
                                          a.mx[u]);
    }
  }
  for (; j + 8 <= to; j += 8) {
    Block<T, Op, G, Fuse, Upper, false>(row, acc, init, wv, j, 8, none, a.sum[0], a.mn[0], a.mx[0]);
  }
  if (j < to) {
    const int rem = to - j;
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    Block<T, Op, G, Fuse, Upper, true>(row, acc, init, wv, j, rem, mask, a.sum[U - 1], a.mn[U - 1],
                                       a.mx[U - 1]);
  }
}

template <WireType T, FuseOp Op, int G>
void FuseGroup(const FuseTask& t) {
  constexpr bool kFuse = Op != FuseOp::kStatsOnly;
  const int64_t elem = T == WireType::kF32 ? 4 : 2;
  for (int r = 0; r < t.rows; ++r) {
    const int i = t.row0 + r;
    const int split = t.causal || t.lower_only ? Min(i + 1, t.cols) : t.cols;
    const char* row[G];
    for (int g = 0; g < G; ++g) {
      row[g] = static_cast<const char*>(t.in[g].data) + elem * r * t.in[g].stride;
    }
    float* acc = kFuse ? t.acc + r * t.acc_stride : nullptr;
    // The heads' loop unrolled: as a loop, its zero stores became a memset
    // (`rep stos`, several per row).
    Acc<G> a;
    for (int u = 0; u < Sets(G); ++u) {
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        a.sum[u][g] = _mm256_setzero_ps();
        a.mn[u][g] = _mm256_set1_ps(kInf);
        a.mx[u][g] = _mm256_setzero_ps();
      }
    }
    Segment<T, Op, G, kFuse, false>(row, acc, t.init, t.weights, 0, split, a);
    if (split < t.cols) {
      if (t.lower_only) {
        Segment<T, Op, G, false, true>(row, acc, t.init, t.weights, split, t.cols, a);
      } else {
        Segment<T, Op, G, kFuse, true>(row, acc, t.init, t.weights, split, t.cols, a);
      }
    }
    if (t.stats == nullptr) continue;
    for (int g = 0; g < G; ++g) {
      RowStats& st = t.stats[g * t.stats_stride + r];
      __m256 sum = a.sum[0][g], mn = a.mn[0][g], mx = a.mx[0][g];
      if constexpr (Sets(G) == 2) {
        sum = _mm256_add_ps(sum, a.sum[1][g]);
        mn = _mm256_min_ps(mn, a.mn[1][g]);
        mx = _mm256_max_ps(mx, a.mx[1][g]);
      }
      st.sum = HorizontalSum(sum);
      st.min = HorizontalMin(mn);
      st.upper_max = t.causal ? HorizontalMax(mx) : 0.0f;
    }
  }
}

template <WireType T, FuseOp Op>
void FuseOf(const FuseTask& t) {
  switch (t.heads) {
    case 1: return FuseGroup<T, Op, 1>(t);
    case 2: return FuseGroup<T, Op, 2>(t);
    case 3: return FuseGroup<T, Op, 3>(t);
    default: return FuseGroup<T, Op, 4>(t);
  }
}

template <WireType T>
void FuseType(const FuseTask& t) {
  switch (t.op) {
    case FuseOp::kStatsOnly: return FuseOf<T, FuseOp::kStatsOnly>(t);
    case FuseOp::kSum: return FuseOf<T, FuseOp::kSum>(t);
    case FuseOp::kWeightedSum: return FuseOf<T, FuseOp::kWeightedSum>(t);
    case FuseOp::kMax: return FuseOf<T, FuseOp::kMax>(t);
    case FuseOp::kMin: return FuseOf<T, FuseOp::kMin>(t);
  }
}

template <WireType T>
void DecodeOf(const char* src, int64_t src_stride, int rows, int cols, float* dst, int64_t dst_stride) {
  const int64_t elem = T == WireType::kF32 ? 4 : 2;
  for (int r = 0; r < rows; ++r) {
    const char* row = src + elem * r * src_stride;
    float* out = dst + r * dst_stride;
    int j = 0;
    for (; j + 8 <= cols; j += 8) _mm256_storeu_ps(out + j, Load8<T>(row, j));
    for (; j < cols; ++j) out[j] = Load1<T>(row, j);
  }
}

}  // namespace

void FuseAvx2(const FuseTask& t) {
  switch (t.type) {
    case WireType::kF32: return FuseType<WireType::kF32>(t);
    case WireType::kF16: return FuseType<WireType::kF16>(t);
    case WireType::kBF16: return FuseType<WireType::kBF16>(t);
  }
}

void DecodeAvx2(WireType type, const void* src, int64_t src_stride, int rows, int cols, float* dst,
                int64_t dst_stride) {
  const char* s = static_cast<const char*>(src);
  switch (type) {
    case WireType::kF32: return DecodeOf<WireType::kF32>(s, src_stride, rows, cols, dst, dst_stride);
    case WireType::kF16: return DecodeOf<WireType::kF16>(s, src_stride, rows, cols, dst, dst_stride);
    case WireType::kBF16: return DecodeOf<WireType::kBF16>(s, src_stride, rows, cols, dst, dst_stride);
  }
}

}  // namespace attnroll::analysis::kernels
