// The hot kernels against a straightforward scalar restatement, and the
// portable build against the AVX2 build (the same fused values bit for bit):
// every wire dtype, every way of combining heads, groups of 1 to 4 heads,
// causal statistics, lower-triangle-only fusion, rows whose length is not a
// multiple of the vector width (each of the AVX2 loop's paths: the unrolled
// blocks, a single block, the masked tail, and their mixes), rows read and
// written with strides longer than the row (padding left untouched), and
// every fp16 / bf16 bit pattern decoded.
#include "server/analysis/fuse_kernels.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace attnroll::analysis {
namespace {

float Fp16ToFloat(uint16_t bits) {
  return Eigen::half_impl::half_to_float(Eigen::half_impl::raw_uint16_to_half(bits));
}
float Bf16ToFloat(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}
bool SameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

std::vector<KernelIsa> Isas() {
  std::vector<KernelIsa> isas = {KernelIsa::kPortable};
  if (KernelIsaAvailable(KernelIsa::kAvx2)) isas.push_back(KernelIsa::kAvx2);
  return isas;
}

// Every one of the 65536 fp16 and bf16 bit patterns (NaNs compared as NaN).
TEST(FuseKernelsTest, DecodeIsExactForEveryBitPattern) {
  std::vector<uint16_t> bits(65536);
  for (int i = 0; i < 65536; ++i) bits[i] = static_cast<uint16_t>(i);
  for (KernelIsa isa : Isas()) {
    for (WireType type : {WireType::kF16, WireType::kBF16}) {
      std::vector<float> out(65536);
      // As 256 rows of 256 (and once as one row of 65531: a ragged tail).
      DecodeRowsWith(isa, type, bits.data(), 256, 256, 256, out.data(), 256);
      std::vector<float> ragged(65531);
      DecodeRowsWith(isa, type, bits.data(), 0, 1, 65531, ragged.data(), 0);
      for (int i = 0; i < 65536; ++i) {
        const float want = type == WireType::kF16 ? Fp16ToFloat(bits[i]) : Bf16ToFloat(bits[i]);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(out[i])) << KernelIsaName(isa) << " " << i;
          continue;
        }
        ASSERT_TRUE(SameBits(out[i], want)) << KernelIsaName(isa) << " bits " << i << ": " << out[i];
        if (i < 65531) {
          ASSERT_TRUE(SameBits(ragged[i], want)) << i;
        }
      }
      // 256 rows of 251 of the 256 sent, into rows of 260: the rest untouched.
      std::vector<float> strided(256 * 260, -7.0f);
      DecodeRowsWith(isa, type, bits.data(), 256, 256, 251, strided.data(), 260);
      for (int r = 0; r < 256; ++r) {
        for (int j = 0; j < 260; ++j) {
          const float got = strided[r * 260 + j];
          if (j >= 251) {
            ASSERT_EQ(got, -7.0f) << KernelIsaName(isa) << " row " << r << " col " << j;
            continue;
          }
          if (std::isnan(out[r * 256 + j])) {
            ASSERT_TRUE(std::isnan(got));
          } else {
            ASSERT_TRUE(SameBits(got, out[r * 256 + j])) << KernelIsaName(isa) << " row " << r << " col " << j;
          }
        }
      }
    }
  }
}

struct Heads {
  WireType type;
  int heads, rows, cols;
  std::vector<std::string> bytes;  // one per head, rows x cols as sent
  std::vector<std::vector<float>> values;  // decoded, for the reference
};

// Random row-stochastic-ish rows with a few planted negatives, large values
// above the diagonal and zeros, in the wire dtype. Rows of `stride` values of
// which the kernels read the first cols: the padding holds NaN, which would
// poison any sum, min or max that read it.
Heads MakeHeads(WireType type, int heads, int rows, int cols, int stride, std::mt19937& rng) {
  Heads h{type, heads, rows, cols, {}, {}};
  std::uniform_real_distribution<float> u(0.0f, 2.0f / cols);
  for (int g = 0; g < heads; ++g) {
    std::string& b = h.bytes.emplace_back();
    std::vector<float>& v = h.values.emplace_back();
    for (int k = 0; k < rows * stride; ++k) {
      float x = u(rng);
      if (rng() % 97 == 0) x = -x;
      if (rng() % 89 == 0) x = 0.5f;
      if (rng() % 83 == 0) x = 0.0f;
      if (k % stride >= cols) x = NAN;
      if (type == WireType::kF32) {
        b.append(reinterpret_cast<const char*>(&x), 4);
        v.push_back(x);
      } else {
        uint16_t bits;
        if (type == WireType::kF16) {
          bits = Eigen::numext::bit_cast<uint16_t>(Eigen::half(x));
          v.push_back(Fp16ToFloat(bits));
        } else {
          bits = Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(x));
          v.push_back(Bf16ToFloat(bits));
        }
        b.append(reinterpret_cast<const char*>(&bits), 2);
      }
    }
  }
  return h;
}

// The reference: heads combined one after the other, in fp32, no FMA.
float Combine(FuseOp op, float d, float t) {
  switch (op) {
    case FuseOp::kMax: return t > d ? t : d;
    case FuseOp::kMin: return t < d ? t : d;
    default: return d + t;
  }
}

TEST(FuseKernelsTest, BothBuildsMatchTheScalarReferenceBitForBit) {
  std::mt19937 rng(7);
  const std::vector<FuseOp> ops = {FuseOp::kSum, FuseOp::kWeightedSum, FuseOp::kMax, FuseOp::kMin,
                                   FuseOp::kStatsOnly};
  for (WireType type : {WireType::kF32, WireType::kF16, WireType::kBF16}) {
    // 8-column vectors, one 64-byte line of each head per iteration (16 fp32
    // or 32 fp16/bf16 columns), then 16 or 8 columns, then a masked tail.
    for (int cols : {1, 7, 8, 9, 15, 16, 17, 24, 29, 32, 37, 40, 64, 197}) {
      for (int heads = 1; heads <= kMaxFuseGroup; ++heads) {
        const int rows = 9, row0 = cols > 9 ? 3 : 0;
        // Odd sizes: input rows padded by 3 values, acc rows by 5.
        const int in_stride = cols % 2 ? cols + 3 : cols, acc_stride = cols % 2 ? cols + 5 : cols;
        const Heads h = MakeHeads(type, heads, rows, cols, in_stride, rng);
        std::vector<WireRows> in(heads);
        for (int g = 0; g < heads; ++g) in[g] = {h.bytes[g].data(), in_stride};
        const std::vector<float> weights = {0.5f, 2.0f, 0.25f, 3.0f};
        for (FuseOp op : ops) {
          for (int mode = 0; mode < 3; ++mode) {  // plain, causal, causal lower-only
            for (bool init : {true, false}) {
              const bool causal = mode > 0, lower_only = mode == 2;
              // The reference, from an initial acc of 0.125 (used when !init).
              std::vector<float> want(rows * acc_stride, 0.125f);
              std::vector<RowStats> want_stats(heads * rows);
              for (int r = 0; r < rows; ++r) {
                const int i = row0 + r;
                const int split = causal ? std::min(i + 1, cols) : cols;
                for (int j = 0; j < cols; ++j) {
                  float x = want[r * acc_stride + j];
                  for (int g = 0; g < heads; ++g) {
                    const float v = h.values[g][r * in_stride + j];
                    const float t = op == FuseOp::kWeightedSum ? weights[g] * v : v;
                    x = init && g == 0 ? t : Combine(op, x, t);
                  }
                  if (op != FuseOp::kStatsOnly && !(lower_only && j >= split)) want[r * acc_stride + j] = x;
                }
                for (int g = 0; g < heads; ++g) {
                  double sum = 0;
                  float mn = INFINITY, up = 0;
                  for (int j = 0; j < cols; ++j) {
                    const float v = h.values[g][r * in_stride + j];
                    sum += v;
                    mn = std::min(mn, v);
                    if (j >= split) up = std::max(up, v);
                  }
                  want_stats[g * rows + r] = {static_cast<float>(sum), mn, causal ? up : 0.0f};
                }
              }
              for (KernelIsa isa : Isas()) {
                std::vector<float> acc(rows * acc_stride, 0.125f);
                std::vector<RowStats> stats(heads * rows);
                FuseTask t;
                t.type = type;
                t.heads = heads;
                t.in = in.data();
                t.weights = weights.data();
                t.rows = rows;
                t.cols = cols;
                t.row0 = row0;
                t.op = op;
                t.init = init;
                t.causal = causal;
                t.lower_only = lower_only;
                t.acc = acc.data();
                t.acc_stride = acc_stride;
                t.stats = stats.data();
                t.stats_stride = rows;
                FuseRowsWith(isa, t);
                const std::string what = std::string(KernelIsaName(isa)) + " type " +
                                         std::to_string(static_cast<int>(type)) + " cols " +
                                         std::to_string(cols) + " heads " + std::to_string(heads) +
                                         " op " + std::to_string(static_cast<int>(op)) + " mode " +
                                         std::to_string(mode) + " init " + std::to_string(init);
                for (int k = 0; k < rows * acc_stride; ++k) {
                  ASSERT_TRUE(SameBits(acc[k], want[k])) << what << " at " << k << ": " << acc[k]
                                                         << " vs " << want[k];
                }
                for (int k = 0; k < heads * rows; ++k) {
                  ASSERT_NEAR(stats[k].sum, want_stats[k].sum, 1e-5) << what << " row " << k;
                  ASSERT_EQ(stats[k].min, want_stats[k].min) << what << " row " << k;
                  ASSERT_EQ(stats[k].upper_max, want_stats[k].upper_max) << what << " row " << k;
                }
              }
            }
          }
        }
      }
    }
  }
}

// A NaN or an infinity anywhere in a row makes its sum non-finite, whichever
// column it is in (so the fast check hands the row to the exact one).
// Every wire type; column 36 of 37 is in the masked tail (for 16-bit rows,
// the row's last 8 values moved down in registers).
TEST(FuseKernelsTest, NonFiniteValuesPoisonTheRowSum) {
  for (KernelIsa isa : Isas()) {
    for (WireType type : {WireType::kF32, WireType::kF16, WireType::kBF16}) {
      for (int col : {0, 5, 8, 16, 31, 32, 36}) {
        for (float bad : {NAN, INFINITY, -INFINITY}) {
          std::vector<float> row(37, 1.0f / 37);
          row[col] = bad;
          std::vector<uint16_t> half(row.size());
          for (size_t j = 0; j < row.size(); ++j) {
            half[j] = type == WireType::kF16
                          ? Eigen::numext::bit_cast<uint16_t>(Eigen::half(row[j]))
                          : Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(row[j]));
          }
          const void* data = type == WireType::kF32 ? static_cast<const void*>(row.data()) : half.data();
          const WireRows in{data, 37};
          RowStats st;
          FuseTask t;
          t.type = type;
          t.heads = 1;
          t.in = &in;
          t.rows = 1;
          t.cols = 37;
          t.op = FuseOp::kStatsOnly;
          t.stats = &st;
          t.stats_stride = 1;
          FuseRowsWith(isa, t);
          EXPECT_FALSE(std::isfinite(st.sum)) << KernelIsaName(isa) << " type "
                                              << static_cast<int>(type) << " col " << col << " " << bad;
        }
      }
    }
  }
}

TEST(FuseKernelsTest, ActiveIsaCanBeChosen) {
  const KernelIsa before = ActiveKernelIsa();
  EXPECT_TRUE(KernelIsaAvailable(before));
  SetActiveKernelIsa(KernelIsa::kPortable);
  EXPECT_EQ(ActiveKernelIsa(), KernelIsa::kPortable);
  SetActiveKernelIsa(before);
  EXPECT_EQ(ActiveKernelIsa(), before);
#if defined(__x86_64__)
  // The kernel's own detection against the kernel's (Linux's) view of the CPU.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      flags = " " + line.substr(line.find(':') + 1) + " ";
      break;
    }
  }
  ASSERT_FALSE(flags.empty());
  auto has = [&](const char* f) { return flags.find(std::string(" ") + f + " ") != std::string::npos; };
  EXPECT_EQ(KernelIsaAvailable(KernelIsa::kAvx2), has("avx2") && has("fma") && has("f16c"));
#endif
}

}  // namespace
}  // namespace attnroll::analysis
