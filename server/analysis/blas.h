// The rollout's matrix products through OpenBLAS (cblas), always on the
// calling thread: OpenBLAS's own threads are switched off once, before the
// first product, so BLAS threads never compete with the worker pool for the
// cores (a pass that wants a second core splits its rows over the pool).
#ifndef ATTNROLL_SERVER_ANALYSIS_BLAS_H_
#define ATTNROLL_SERVER_ANALYSIS_BLAS_H_

#include <string>

namespace attnroll::analysis {

// c (rows x m) = a (rows x m, row stride lda) @ b (m x m, row stride m); c's
// row stride is m. fp32, accumulated as sgemm does.
void GemmRows(const float* a, int lda, int rows, const float* b, int m, float* c);

// c (m x m) = l @ b where l and b are lower-triangular (only their lower
// triangles are read; c's upper triangle is written 0): m^3 / 3 multiply-adds
// instead of m^3, by panels of columns through strmm.
void LowerTimesLower(const float* l, const float* b, int m, float* c);

// "OpenBLAS 0.3.21 ... (core Cooperlake), 1 thread per call".
std::string BlasDescription();

}  // namespace attnroll::analysis

#endif  // ATTNROLL_SERVER_ANALYSIS_BLAS_H_
