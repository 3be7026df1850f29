// Pass messages for tests: headers, layer chunks built straight from an
// Attention (independently of the client library's splitting and encoding),
// and the values of result tensors (and FP32 tensors made from values).
#ifndef ATTNROLL_TESTS_TESTUTIL_PASS_TESTUTIL_H_
#define ATTNROLL_TESTS_TESTUTIL_PASS_TESTUTIL_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "attnroll/v1/attnroll.pb.h"
#include "tests/testutil/attention_testutil.h"

namespace attnroll::testing {

inline v1::PassHeader RolloutHeader(const Attention& a, const std::string& id = "test") {
  v1::PassHeader h;
  h.set_request_id(id);
  v1::Layout* l = h.mutable_layout();
  l->set_num_layers(a.layers);
  l->set_num_heads(a.heads);
  l->set_num_tokens(a.tokens);
  l->set_batch_size(a.batch);
  h.add_analyses()->mutable_rollout();
  return h;
}

// Layer `layer` of `a` as fp32 chunks of at most `heads_per_chunk` heads.
inline std::vector<v1::LayerChunk> ChunksOf(const Attention& a, int layer, int heads_per_chunk = 1 << 20) {
  std::vector<v1::LayerChunk> chunks;
  const int64_t block = a.tokens * a.tokens;
  for (int64_t h0 = 0; h0 < a.heads; h0 += heads_per_chunk) {
    const int64_t h = std::min<int64_t>(heads_per_chunk, a.heads - h0);
    v1::LayerChunk& c = chunks.emplace_back();
    c.set_layer(layer);
    c.set_head_start(static_cast<uint32_t>(h0));
    v1::Tensor* t = c.mutable_attention();
    t->set_dtype(v1::DTYPE_FP32);
    for (int64_t d : {a.batch, h, a.tokens, a.tokens}) t->add_shape(d);
    for (int64_t b = 0; b < a.batch; ++b) {
      const float* src = a.values.data() + ((b * a.layers + layer) * a.heads + h0) * block;
      t->mutable_data()->append(reinterpret_cast<const char*>(src),
                                static_cast<size_t>(h * block) * sizeof(float));
    }
  }
  return chunks;
}

inline std::vector<float> MapValues(const v1::Tensor& t) {
  const float* p = reinterpret_cast<const float*>(t.data().data());
  return std::vector<float>(p, p + t.data().size() / sizeof(float));
}

// The inverse of MapValues: an FP32 tensor of `shape` holding `values`.
inline v1::Tensor Fp32Tensor(const std::vector<float>& values, const std::vector<int64_t>& shape) {
  v1::Tensor t;
  t.set_dtype(v1::DTYPE_FP32);
  for (int64_t d : shape) t.add_shape(d);
  t.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return t;
}

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_PASS_TESTUTIL_H_
