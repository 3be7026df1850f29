// Helpers shared by tests: matrices and attention with known structure.
// The math's types only (no protos, no client).
#ifndef ATTNROLL_TESTS_TESTUTIL_ATTENTION_TESTUTIL_H_
#define ATTNROLL_TESTS_TESTUTIL_ATTENTION_TESTUTIL_H_

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "server/analysis/types.h"

namespace attnroll::testing {

// A view of a whole matrix, as the math takes it.
inline analysis::ConstMatrixView View(const analysis::MatrixF& m) {
  return analysis::ConstMatrixView(m.data(), m.rows(), m.cols(), Eigen::OuterStride<>(m.cols()));
}

// A small matrix written out row by row.
inline analysis::MatrixF Mat(std::initializer_list<std::initializer_list<float>> rows) {
  analysis::MatrixF m(rows.size(), rows.begin()->size());
  int i = 0;
  for (auto& r : rows) {
    int j = 0;
    for (float v : r) m(i, j++) = v;
    ++i;
  }
  return m;
}

inline std::vector<float> Flat(const analysis::MatrixF& m) { return {m.data(), m.data() + m.size()}; }

// Row-stochastic m x m: softmax of N(0, scale^2) logits (large scale = peaked rows).
inline analysis::MatrixF RandomStochastic(int m, std::mt19937& rng, float scale = 2.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  analysis::MatrixF a(m, m);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) a(i, j) = std::exp(normal(rng));
    a.row(i) /= a.row(i).sum();
  }
  return a;
}

// A [B, L, H, n, n] float32 array filled by f(b, l, h) -> n x n matrix.
struct Attention {
  int64_t batch, layers, heads, tokens;
  std::vector<float> values;
  float* at(int64_t b, int64_t l, int64_t h) {
    return values.data() + (((b * layers + l) * heads + h) * tokens * tokens);
  }
};

template <typename F>
Attention MakeAttention(int64_t batch, int64_t layers, int64_t heads, int64_t tokens, F f) {
  Attention a{batch, layers, heads, tokens,
              std::vector<float>(static_cast<size_t>(batch * layers * heads * tokens * tokens))};
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t h = 0; h < heads; ++h) {
        analysis::MatrixF m = f(b, l, h);
        std::copy(m.data(), m.data() + m.size(), a.at(b, l, h));
      }
    }
  }
  return a;
}

// Uniform attention: every row 1/n. With residual a = 0.5, L layers of it roll
// out to 0.5^L I + (1 - 0.5^L) U (U = uniform, U^2 = U), a closed form.
inline Attention UniformAttention(int64_t batch, int64_t layers, int64_t heads, int64_t tokens) {
  return MakeAttention(batch, layers, heads, tokens, [&](int64_t, int64_t, int64_t) {
    return analysis::MatrixF::Constant(tokens, tokens, 1.0f / static_cast<float>(tokens));
  });
}

// Row `row` of that closed form for n tokens and L layers: 0.5^L at the row's
// own token plus (1 - 0.5^L) / n everywhere.
inline std::vector<float> UniformRollout(int n, int L, int row) {
  const float p = std::pow(0.5f, L);
  std::vector<float> expected(n, (1 - p) / n);
  expected[row] += p;
  return expected;
}

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_ATTENTION_TESTUTIL_H_
