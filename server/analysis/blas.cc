#include "server/analysis/blas.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include <cblas.h>

#include "absl/strings/str_cat.h"

namespace attnroll::analysis {
namespace {

void OneThread() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// Columns per panel of LowerTimesLower: wide enough for the GEMM kernels.
constexpr int kPanel = 256;

}  // namespace

void GemmRows(const float* a, int lda, int rows, const float* b, int m, float* c) {
  OneThread();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, m, m, 1.0f, a, lda, b, m, 0.0f, c, m);
}

void LowerTimesLower(const float* l, const float* b, int m, float* c) {
  OneThread();
  // Column panel [j0, j1) of c: rows >= j0 only (b is lower-triangular), and
  // c[j0:, j0:j1] = l[j0:, j0:] @ b[j0:, j0:j1], a triangular product.
  for (int j0 = 0; j0 < m; j0 += kPanel) {
    const int w = std::min(kPanel, m - j0);
    for (int i = 0; i < j0; ++i) std::memset(c + static_cast<int64_t>(i) * m + j0, 0, sizeof(float) * w);
    for (int i = j0; i < m; ++i) {
      std::memcpy(c + static_cast<int64_t>(i) * m + j0, b + static_cast<int64_t>(i) * m + j0,
                  sizeof(float) * w);
    }
    // (b's entries above the diagonal of the panel's first rows are 0, as the
    // product needs; they are copied as they are: zero the upper triangle.)
    for (int i = j0; i < j0 + w; ++i) {
      std::memset(c + static_cast<int64_t>(i) * m + i + 1, 0, sizeof(float) * (j0 + w - i - 1));
    }
    const int64_t at = static_cast<int64_t>(j0) * m + j0;
    cblas_strmm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, m - j0, w, 1.0f,
                l + at, m, c + at, m);
  }
}

std::string BlasDescription() {
  OneThread();
  return absl::StrCat(openblas_get_config(), " (core ", openblas_get_corename(), "), ",
                      openblas_get_num_threads(), " thread per call");
}

}  // namespace attnroll::analysis
