// The Python client's native fast path (loaded with ctypes by
// attnroll/native.py): one layer's heads checked and fused in a single pass
// with the service's kernels, as the C++ client does (client/cpp/layer_fusion.h).
// A plain C ABI over numpy's buffers; ctypes releases the GIL around the call,
// so a layer is fused while gRPC's thread sends the one before.
#include <cstdint>
#include <vector>

#include "client/cpp/half_encode.h"
#include "client/cpp/layer_fusion.h"
#include "server/analysis/fuse_kernels.h"

extern "C" {

// heads: [batch, num_heads, rows, n] fp32, C order; out: [batch, rows, n].
// valid: one valid length per sequence (1..n), or null (every token).
// scale: one w_h / sum w per head, or null for equal weights (then every
// entry is the heads' sum times mean_scale). Returns 0 when every measured
// row of every head passes the service's fast check, 1 when one does not
// (the caller then runs the exact check, which names the row or accepts it).
int attnroll_fuse_layer(const float* heads, int batch, int num_heads, int rows, int n,
                        const int* valid, const float* scale, float mean_scale, int causal,
                        float tolerance, float* out) {
  int suspect = 0;
  std::vector<attnroll::analysis::RowStats> stats;
  const long long per_head = static_cast<long long>(rows) * n;
  for (int b = 0; b < batch; ++b) {
    attnroll::client::LayerFusion f;
    f.heads = heads + b * num_heads * per_head;
    f.num_heads = num_heads;
    f.rows = rows;
    f.n = n;
    f.valid = valid == nullptr ? n : (valid[b] < 1 ? 1 : (valid[b] > n ? n : valid[b]));
    f.scale = scale;
    f.mean_scale = mean_scale;
    f.causal = causal != 0;
    f.out = out + b * per_head;
    const int measured = attnroll::client::MeasuredRows(f);
    stats.resize(static_cast<size_t>(num_heads) * measured);
    attnroll::client::FuseLayer(f, stats.data());
    for (const attnroll::analysis::RowStats& st : stats) {
      if (!attnroll::analysis::PassesFastCheck(st, tolerance, f.causal)) suspect = 1;
    }
  }
  return suspect;
}

// src [count] fp32 -> dst [count] IEEE half bits, rounded to nearest even
// (numpy's astype(float16) bit for bit, about ten times faster).
void attnroll_encode_half(const float* src, long long count, uint16_t* dst) {
  attnroll::client::EncodeHalf(src, static_cast<size_t>(count), dst);
}

// "avx2" or "portable": the kernels this CPU runs.
const char* attnroll_kernel_isa() {
  return attnroll::analysis::KernelIsaName(attnroll::analysis::ActiveKernelIsa());
}

}  // extern "C"
