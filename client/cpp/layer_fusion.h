// One layer's heads fused and measured in a single pass over the attention,
// with the service's own kernels (server/analysis/fuse_kernels.h): the rows
// of every head are read once, their statistics (sum, minimum, largest entry
// above the diagonal) gathered for the fast check, and the heads combined.
// No protobuf and no absl here: the Python client's native library
// (client/python/native) is built from this file too.
//
// Fused values, bit for bit the Python client's (the server's own fusion of
// every head uses the same kernels in the same order but folds the weights
// in differently, so it agrees to fp32 rounding): equal weights (mean): F = (A_0 + A_1 + ... + A_{H-1}) * (w_0 / sum w), the
// sum in head order in fp32; other weights: F = s_0 A_0 + s_1 A_1 + ... with
// s_h = w_h / sum w, each product rounded before its sum (never an FMA).
#ifndef ATTNROLL_CLIENT_CPP_LAYER_FUSION_H_
#define ATTNROLL_CLIENT_CPP_LAYER_FUSION_H_

#include <cstdint>

#include "server/analysis/fuse_kernels.h"

namespace attnroll::client {

struct LayerFusion {
  const float* heads = nullptr;  // [H, rows, n] fp32: head h at heads + h * rows * n
  int num_heads = 0;
  int rows = 0;                  // query rows of each head (n, or fewer)
  int n = 0;                     // columns (keys)
  int valid = 0;                 // valid tokens m, 1..n: rows and columns < m are measured
  const float* scale = nullptr;  // one per head, w_h / sum w; null: equal weights
  float mean_scale = 1.0f;       // with equal weights: w_0 / sum w (1/H for mean fusion)
  bool causal = false;           // measure upper_max (entries j > i of row i)
  float* out = nullptr;          // [rows, n]: every entry written, padding too
};

// The number of measured rows of each head: min(rows, valid).
inline int MeasuredRows(const LayerFusion& f) { return f.rows < f.valid ? f.rows : f.valid; }

// Fuses f into f.out and writes the statistics of head h's measured row r
// (over its valid columns) to stats[h * MeasuredRows(f) + r].
void FuseLayer(const LayerFusion& f, analysis::RowStats* stats);

// The fast check of each row's statistics: analysis::PassesFastCheck.

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_LAYER_FUSION_H_
