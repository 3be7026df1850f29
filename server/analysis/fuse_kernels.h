// The hot loops of a rollout pass, over attention rows exactly as they
// arrived on the wire (fp32, fp16 or bf16, decoded in registers): a group of
// heads is read once, row by row, and in the same pass each head's row
// statistics are measured (for validation) and the heads are combined into
// the fused matrix. Two builds of every kernel: a portable one (the
// compiler's own flags) and an AVX2 + FMA + F16C one chosen at run time when
// the CPU has those. Both give bit-identical fused values: the heads are
// combined in the same order, one head after the other, with the same fp32
// operations (no contraction into FMA). The row statistics are sums in fp32
// whose order differs; they only decide the fast check (a rejected row is
// re-checked exactly), so they need not be identical.
#ifndef ATTNROLL_SERVER_ANALYSIS_FUSE_KERNELS_H_
#define ATTNROLL_SERVER_ANALYSIS_FUSE_KERNELS_H_

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace attnroll::analysis {

// Per-row figures of an attention row that the service validates.
struct RowStats {
  float sum = 0;        // NaN or Inf if any value is
  float min = 0;
  float upper_max = 0;  // max over columns j > i (row i); 0 when not asked for or none
};

// The service's fast check of one row's statistics: a finite sum within
// `tolerance` of 1 (which rules out NaN and Inf anywhere in the row), no
// negative entry, and (causal) nothing above the diagonal beyond the
// tolerance. A row that fails it is not necessarily invalid: the exact check
// (in double) decides.
inline bool PassesFastCheck(const RowStats& st, float tolerance, bool causal) {
  return std::isfinite(st.sum) && std::abs(st.sum - 1.0f) <= tolerance && st.min >= 0.0f &&
         (!causal || st.upper_max <= tolerance);
}

// How the attention values are stored (little-endian).
enum class WireType { kF32, kF16, kBF16 };

// Rows of one head as received: row r starts `r * stride` elements after data.
struct WireRows {
  const void* data = nullptr;
  int64_t stride = 0;
};

// How a group of heads is combined into the fused rows.
enum class FuseOp {
  kStatsOnly,    // nothing is written: statistics only
  kSum,          // acc + a_h            (mean: the 1/H comes later)
  kWeightedSum,  // acc + w_h * a_h      (a product, then a sum: never an FMA)
  kMax,
  kMin,
};

constexpr int kMaxFuseGroup = 4;

struct FuseTask {
  WireType type = WireType::kF32;
  int heads = 0;                  // 1..kMaxFuseGroup heads in this group
  const WireRows* in = nullptr;   // one per head
  const float* weights = nullptr; // kWeightedSum: one per head
  int rows = 0;                   // rows in the strip
  int cols = 0;                   // valid columns (padding already cropped)
  int row0 = 0;                   // global row index of the strip's first row
  FuseOp op = FuseOp::kSum;
  // The group's first head initialises acc (term 0, then the others
  // combined into it) instead of being combined into what acc holds.
  bool init = false;
  // Causal layout: upper_max is measured over the columns j > i of row i.
  bool causal = false;
  // Causal and nothing needs the entries above the diagonal: only columns
  // j <= i of acc are written (the ones above are left as they are); the
  // statistics still cover every column.
  bool lower_only = false;
  float* acc = nullptr;           // rows x cols, row r at acc + r * acc_stride
  int64_t acc_stride = 0;
  // Null, or one RowStats per (head, row): head g, row r at
  // stats[g * stats_stride + r].
  RowStats* stats = nullptr;
  int stats_stride = 0;
};

enum class KernelIsa { kPortable, kAvx2 };
const char* KernelIsaName(KernelIsa isa);
// Whether this build has kernels for `isa` and this CPU runs them.
bool KernelIsaAvailable(KernelIsa isa);
// The ISA FuseRows and DecodeRows use: the best available, unless the
// environment variable ATTNROLL_KERNELS=portable asks for the portable one.
KernelIsa ActiveKernelIsa();
// Tests: from now on FuseRows and DecodeRows use `isa` (it must be available).
void SetActiveKernelIsa(KernelIsa isa);

void FuseRows(const FuseTask& task);
void FuseRowsWith(KernelIsa isa, const FuseTask& task);

// Decodes rows x cols values (row r of src at src + r * src_stride elements)
// to fp32 (dst row r at dst + r * dst_stride). Exact for every dtype.
void DecodeRows(WireType type, const void* src, int64_t src_stride, int rows, int cols, float* dst,
                int64_t dst_stride);
void DecodeRowsWith(KernelIsa isa, WireType type, const void* src, int64_t src_stride, int rows,
                    int cols, float* dst, int64_t dst_stride);

namespace kernels {
// The two builds (fuse_kernels.cc, fuse_kernels_avx2.cc); use the functions above.
void FusePortable(const FuseTask& task);
void DecodePortable(WireType type, const void* src, int64_t src_stride, int rows, int cols,
                    float* dst, int64_t dst_stride);
#if defined(__x86_64__)
void FuseAvx2(const FuseTask& task);
void DecodeAvx2(WireType type, const void* src, int64_t src_stride, int rows, int cols, float* dst,
                int64_t dst_stride);
#endif
}  // namespace kernels

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_FUSE_KERNELS_H_
