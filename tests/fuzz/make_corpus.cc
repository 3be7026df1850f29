// Writes the seed corpus of the proto fuzz targets (tests/fuzz/make_corpus.sh
// runs it; the .npy/.npz seeds come from numpy in make_npy_corpus.py):
//
//   make_corpus OUT_DIR   ->  OUT_DIR/{pass_header,pass_chunks,compare,audit}/seed-*
//
// Each seed is a request a client could send, built like the tests build
// them: valid passes of small shapes in every dtype and analysis kind, and a
// few edge cases (counts at and past the fuzz limits, bad enums, messages
// out of order). Every seed said to be valid is run through the same code as
// the fuzz targets first and must be accepted, so the corpus starts deep in
// the server's code rather than at its first check. Deterministic: the same
// binary writes the same bytes.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "attnroll/v1/attnroll.pb.h"
#include "attnroll/v1/audit.pb.h"
#include "client/cpp/tensor_encode.h"
#include "server/session/audit_session.h"
#include "server/session/compare_request.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/pass_driver.h"

namespace attnroll::fuzz {
namespace {

std::string out_dir;
int written = 0;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = out_dir + "/" + target;
  mkdir(out_dir.c_str(), 0755);
  mkdir(dir.c_str(), 0755);
  std::ofstream f(dir + "/seed-" + name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "make_corpus: cannot write %s/seed-%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
  ++written;
}

void Fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "make_corpus: seed %s was refused: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

std::mt19937 rng(20240611);

// Row-stochastic rows x cols values (causal: zero above the diagonal).
std::vector<float> Stochastic(int rows, int cols, bool causal = false) {
  std::uniform_real_distribution<float> u(0.05f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows) * cols);
  for (int i = 0; i < rows; ++i) {
    double sum = 0;
    for (int j = 0; j < cols; ++j) {
      float x = causal && j > i ? 0.0f : u(rng);
      v[static_cast<size_t>(i) * cols + j] = x;
      sum += x;
    }
    for (int j = 0; j < cols; ++j) v[static_cast<size_t>(i) * cols + j] /= static_cast<float>(sum);
  }
  return v;
}

v1::Tensor TensorOf(v1::DType dtype, const std::vector<float>& values, const std::vector<int64_t>& shape) {
  v1::Tensor t;
  t.set_dtype(dtype);
  for (int64_t d : shape) t.add_shape(d);
  client::AppendEncoded(dtype, values.data(), values.size(), t.mutable_data());
  return t;
}

// [B, h, rows, cols] attention: sequence b's valid block (its first
// valid_rows[b] rows and valid_cols[b] keys; all of them when empty) is
// row-stochastic, the padding holds 0.25 (never read).
v1::Tensor AttentionOf(v1::DType dtype, int batch, int heads, int rows, int cols, bool causal = false,
                       const std::vector<int>& valid_rows = {}, const std::vector<int>& valid_cols = {}) {
  std::vector<float> all;
  for (int b = 0; b < batch; ++b) {
    const int mr = valid_rows.empty() ? rows : valid_rows[b];
    const int mc = valid_cols.empty() ? cols : valid_cols[b];
    for (int k = 0; k < heads; ++k) {
      const std::vector<float> block = Stochastic(mr, mc, causal);
      for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < cols; ++j) {
          all.push_back(i < mr && j < mc ? block[static_cast<size_t>(i) * mc + j] : 0.25f);
        }
      }
    }
  }
  return TensorOf(dtype, all, {batch, heads, rows, cols});
}

v1::Tensor Uniform(v1::DType dtype, const std::vector<int64_t>& shape, float lo, float hi) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = u(rng);
  return TensorOf(dtype, v, shape);
}

v1::PassHeader Header(int layers, int heads, int tokens, int batch = 1) {
  v1::PassHeader h;
  h.set_request_id("seed");
  v1::Layout* l = h.mutable_layout();
  l->set_num_layers(layers);
  l->set_num_heads(heads);
  l->set_num_tokens(tokens);
  if (batch != 1) l->set_batch_size(batch);
  return h;
}

v1::PassHeader EncoderDecoderHeader(int enc_layers, int dec_layers, int heads, int n_enc, int n_dec,
                                    int batch, v1::Composition composition) {
  v1::PassHeader h;
  h.set_request_id("seed-ed");
  v1::Layout* l = h.mutable_layout();
  l->set_num_heads(heads);
  if (batch != 1) l->set_batch_size(batch);
  v1::EncoderDecoder* ed = l->mutable_encoder_decoder();
  ed->set_encoder_layers(enc_layers);
  ed->set_decoder_layers(dec_layers);
  ed->set_encoder_tokens(n_enc);
  ed->set_decoder_tokens(n_dec);
  v1::EncoderDecoderOptions* o = h.add_analyses()->mutable_encoder_decoder();
  o->set_composition(composition);
  o->set_return_encoder(true);
  o->set_return_decoder(true);
  return h;
}

// What a pass sends besides attention on each message.
struct Extras {
  v1::DType dtype = v1::DTYPE_FP32;
  int heads_per_chunk = 1 << 10;
  bool gradient = false;
  bool residual_weights = false;  // per token
  bool value_norms = false;
};

bool Causal(const v1::PassHeader& h) { return h.layout().causal(); }

// The layer messages of a single-stack pass of `h`'s layout.
std::vector<v1::LayerChunk> Chunks(const v1::PassHeader& h, const Extras& x) {
  const v1::Layout& l = h.layout();
  const int batch = l.batch_size() == 0 ? 1 : static_cast<int>(l.batch_size());
  const int n = static_cast<int>(l.num_tokens());
  const std::vector<int> valid(l.valid_lengths().begin(), l.valid_lengths().end());
  std::vector<v1::LayerChunk> out;
  for (int layer = 0; layer < static_cast<int>(l.num_layers()); ++layer) {
    for (int h0 = 0; h0 < static_cast<int>(l.num_heads()); h0 += x.heads_per_chunk) {
      const int hc = std::min<int>(x.heads_per_chunk, static_cast<int>(l.num_heads()) - h0);
      v1::LayerChunk& c = out.emplace_back();
      c.set_layer(layer);
      c.set_head_start(h0);
      *c.mutable_attention() = AttentionOf(x.dtype, batch, hc, n, n, Causal(h), valid, valid);
      if (x.gradient) *c.mutable_gradient() = Uniform(x.dtype, {batch, hc, n, n}, -1.0f, 1.0f);
      if (x.residual_weights && h0 == 0) *c.mutable_residual_weights() = Uniform(v1::DTYPE_FP32, {batch, n}, 0.0f, 1.0f);
      if (x.value_norms) *c.mutable_value_norms() = Uniform(v1::DTYPE_FP32, {batch, hc, n}, 0.1f, 2.0f);
    }
  }
  return out;
}

// The layer messages of an encoder-decoder pass, in its stacks' order.
std::vector<v1::LayerChunk> EncoderDecoderChunks(const v1::PassHeader& h, v1::DType dtype, bool gradient) {
  const v1::Layout& l = h.layout();
  const v1::EncoderDecoder& ed = l.encoder_decoder();
  const int batch = l.batch_size() == 0 ? 1 : static_cast<int>(l.batch_size());
  const int heads = static_cast<int>(l.num_heads());
  const int ne = static_cast<int>(ed.encoder_tokens()), nd = static_cast<int>(ed.decoder_tokens());
  const std::vector<int> ve(ed.encoder_valid_lengths().begin(), ed.encoder_valid_lengths().end());
  const std::vector<int> vd(ed.decoder_valid_lengths().begin(), ed.decoder_valid_lengths().end());
  std::vector<v1::LayerChunk> out;
  auto add = [&](v1::Stack stack, int layer, int rows, int cols, bool causal) {
    v1::LayerChunk& c = out.emplace_back();
    c.set_stack(stack);
    c.set_layer(layer);
    const std::vector<int>& vr = stack == v1::STACK_ENCODER ? ve : vd;
    const std::vector<int>& vc = stack == v1::STACK_DECODER_SELF ? vd : ve;
    *c.mutable_attention() = AttentionOf(dtype, batch, heads, rows, cols, causal, vr, vc);
    if (gradient) *c.mutable_gradient() = Uniform(dtype, {batch, heads, rows, cols}, -1.0f, 1.0f);
  };
  for (int k = 0; k < static_cast<int>(ed.encoder_layers()); ++k) add(v1::STACK_ENCODER, k, ne, ne, false);
  for (int k = 0; k < static_cast<int>(ed.decoder_layers()); ++k) {
    add(v1::STACK_DECODER_SELF, k, nd, nd, l.causal());
    add(v1::STACK_DECODER_CROSS, k, nd, ne, false);
  }
  return out;
}

std::string Message(const v1::PassHeader& h) {
  v1::ExplainRequest r;
  *r.mutable_header() = h;
  return r.SerializeAsString();
}
std::string Message(const v1::LayerChunk& c) {
  v1::ExplainRequest r;
  *r.mutable_layer() = c;
  return r.SerializeAsString();
}

// A pass seed: header and chunks, run through PassDriver first when `valid`.
void PassSeed(const std::string& name, const v1::PassHeader& h, const std::vector<v1::LayerChunk>& chunks,
              bool valid = true) {
  if (valid) {
    PassDriver d;
    if (!d.Open(h)) Fail(name, d.status());
    for (const v1::LayerChunk& c : chunks) {
      if (!d.Add(c, 0)) Fail(name, d.status());
    }
    if (absl::StatusOr<v1::ExplainResponse> r = d.Finish(); !r.ok()) Fail(name, r.status());
  }
  std::vector<std::string> messages = {Message(h)};
  for (const v1::LayerChunk& c : chunks) messages.push_back(Message(c));
  Write("pass_chunks", name, JoinMessages(messages));
  if (!valid) return;
  // The same pass as one message (ExplainRequest.whole_pass).
  v1::ExplainRequest whole;
  *whole.mutable_whole_pass()->mutable_header() = h;
  for (const v1::LayerChunk& c : chunks) *whole.mutable_whole_pass()->add_layers() = c;
  Write("pass_chunks", name + "-whole", JoinMessages({whole.SerializeAsString()}));
}

void HeaderSeed(const std::string& name, const v1::PassHeader& h, bool valid = true) {
  if (valid) {
    absl::StatusOr<session::PlannedPass> p = session::PlanFromHeader(h, Limits(), kThreads);
    if (!p.ok()) Fail(name, p.status());
  }
  Write("pass_header", name, h.SerializeAsString());
}

v1::RolloutOptions* Rollout(v1::PassHeader& h) { return h.add_analyses()->mutable_rollout(); }

void PassSeeds() {
  // Plain rollout in each wire dtype, one message per layer and split by head.
  for (v1::DType dtype : {v1::DTYPE_FP32, v1::DTYPE_FP16, v1::DTYPE_BF16}) {
    v1::PassHeader h = Header(2, 2, 5);
    Rollout(h);
    Extras x;
    x.dtype = dtype;
    PassSeed(absl::StrCat("rollout-", v1::DType_Name(dtype)), h, Chunks(h, x));
    x.heads_per_chunk = 1;
    PassSeed(absl::StrCat("rollout-by-head-", v1::DType_Name(dtype)), h, Chunks(h, x));
  }
  {  // A batch with padding, a prefix, a grid, every read-out and scaling.
    v1::PassHeader h = Header(2, 2, 6, 2);
    // A 2x2 grid needs n_b - P = 4 for every sequence.
    h.mutable_layout()->add_valid_lengths(5);
    h.mutable_layout()->add_valid_lengths(5);
    h.mutable_layout()->set_prefix_tokens(1);
    h.mutable_layout()->mutable_grid()->set_height(2);
    h.mutable_layout()->mutable_grid()->set_width(2);
    v1::RolloutOptions* a = Rollout(h);
    a->mutable_readout()->add_rows(0);
    a->mutable_readout()->add_rows(2);
    a->mutable_readout()->set_scaling(v1::SCALING_MINMAX);
    v1::RolloutOptions* b = Rollout(h);
    b->mutable_readout()->set_mean_of_rows(true);
    b->mutable_readout()->set_scaling(v1::SCALING_MAX);
    b->set_per_layer(true);
    v1::RolloutOptions* c = Rollout(h);
    c->mutable_readout()->set_last_row(true);
    c->mutable_readout()->set_scaling(v1::SCALING_SUM);
    c->mutable_readout()->set_sink_tokens(1);
    PassSeed("batch-padding-grid", h, Chunks(h, Extras{v1::DTYPE_FP16}));
    HeaderSeed("batch-padding-grid", h);
  }
  {  // Every fusion, residuals, layer ranges.
    v1::PassHeader h = Header(3, 3, 4);
    v1::RolloutOptions* a = Rollout(h);
    a->set_fusion(v1::HEAD_FUSION_WEIGHTED);
    for (float w : {0.5f, 0.3f, 0.2f}) a->add_head_weights(w);
    a->set_residual(0.3f);
    a->mutable_layers()->set_first(1);
    a->mutable_layers()->set_last(2);
    v1::RolloutOptions* b = Rollout(h);
    b->set_fusion(v1::HEAD_FUSION_MAX);
    b->set_no_renormalize(true);
    v1::RolloutOptions* c = Rollout(h);
    c->set_fusion(v1::HEAD_FUSION_NONE);
    c->set_head_aggregate(v1::HEAD_FUSION_MIN);
    c->set_residual(0.0f);
    PassSeed("fusions", h, Chunks(h, Extras{}));
    HeaderSeed("fusions", h);
  }
  {  // Pruning in each place.
    v1::PassHeader h = Header(2, 2, 6);
    v1::RolloutOptions* a = Rollout(h);
    a->mutable_pruning()->set_discard_ratio(0.3);
    a->mutable_pruning()->set_top_k(3);
    v1::RolloutOptions* b = Rollout(h);
    b->mutable_pruning()->set_threshold(0.1f);
    b->mutable_pruning()->set_threshold_placement(v1::PRUNING_PLACEMENT_AFTER_RESIDUAL);
    b->mutable_pruning()->set_renormalize_before_residual(true);
    v1::RolloutOptions* c = Rollout(h);
    c->mutable_pruning()->set_mass(0.9f);
    c->mutable_pruning()->set_top_k_placement(v1::PRUNING_PLACEMENT_BEFORE_RESIDUAL);
    PassSeed("pruning", h, Chunks(h, Extras{}));
    HeaderSeed("pruning", h);
  }
  {  // Gradient-weighted rollout, both rules, gradients in fp16.
    v1::PassHeader h = Header(2, 2, 4);
    Rollout(h)->mutable_gradient()->set_rule(v1::GRADIENT_RULE_CHEFER);
    v1::RolloutOptions* b = Rollout(h);
    b->mutable_gradient()->set_rule(v1::GRADIENT_RULE_VIT_EXPLAIN);
    b->mutable_gradient()->set_row_normalize(true);
    Extras x;
    x.dtype = v1::DTYPE_FP16;
    x.gradient = true;
    x.heads_per_chunk = 1;
    PassSeed("gradient", h, Chunks(h, x));
    HeaderSeed("gradient", h);
  }
  {  // Residual weights per token and value norms.
    v1::PassHeader h = Header(2, 2, 4, 2);
    Rollout(h);
    Extras x;
    x.residual_weights = true;
    x.value_norms = true;
    x.heads_per_chunk = 1;
    PassSeed("residual-weights-value-norms", h, Chunks(h, x));
    x.dtype = v1::DTYPE_BF16;
    PassSeed("residual-weights-value-norms-bf16", h, Chunks(h, x));
  }
  {  // Causal, last row, a sink.
    v1::PassHeader h = Header(2, 2, 5);
    h.mutable_layout()->set_causal(true);
    v1::RolloutOptions* a = Rollout(h);
    a->mutable_readout()->set_last_row(true);
    a->mutable_readout()->set_sink_tokens(1);
    PassSeed("causal", h, Chunks(h, Extras{}));
    HeaderSeed("causal", h);
  }
  {  // Attention flow: rows, every row, raw values; and validate-only.
    v1::PassHeader h = Header(2, 2, 5);
    v1::FlowOptions* f = h.add_analyses()->mutable_flow();
    f->mutable_readout()->add_rows(0);
    f->mutable_readout()->add_rows(3);
    v1::FlowOptions* g = h.add_analyses()->mutable_flow();
    g->set_all_rows(true);
    g->set_raw(true);
    h.add_analyses()->mutable_validate();
    PassSeed("flow", h, Chunks(h, Extras{}));
    HeaderSeed("flow", h);
  }
  {  // Encoder-decoder passes, both compositions.
    v1::PassHeader rules = EncoderDecoderHeader(2, 1, 2, 4, 3, 1, v1::COMPOSITION_RULES);
    PassSeed("encoder-decoder-rules", rules, EncoderDecoderChunks(rules, v1::DTYPE_FP32, true));
    HeaderSeed("encoder-decoder-rules", rules);
    v1::PassHeader roll = EncoderDecoderHeader(1, 2, 2, 3, 4, 2, v1::COMPOSITION_ROLLOUT);
    roll.mutable_layout()->set_causal(true);
    roll.mutable_layout()->mutable_encoder_decoder()->add_encoder_valid_lengths(3);
    roll.mutable_layout()->mutable_encoder_decoder()->add_encoder_valid_lengths(2);
    roll.mutable_layout()->mutable_encoder_decoder()->add_decoder_valid_lengths(4);
    roll.mutable_layout()->mutable_encoder_decoder()->add_decoder_valid_lengths(3);
    roll.mutable_analyses(0)->mutable_encoder_decoder()->mutable_readout()->add_rows(1);
    PassSeed("encoder-decoder-rollout", roll, EncoderDecoderChunks(roll, v1::DTYPE_FP16, false));
    HeaderSeed("encoder-decoder-rollout", roll);
  }
  {  // Passes the server refuses: a layer out of order, a row that does not sum to 1.
    v1::PassHeader h = Header(2, 2, 4);
    std::vector<v1::LayerChunk> chunks = Chunks(h, Extras{});
    std::swap(chunks[0], chunks[1]);
    PassSeed("out-of-order", h, chunks, /*valid=*/false);
    chunks = Chunks(h, Extras{});
    chunks[1].mutable_attention()->mutable_data()->replace(0, 4, std::string("\0\0\x80\x3f", 4));
    PassSeed("row-sum", h, chunks, /*valid=*/false);
  }
  // Headers at and past the fuzz limits, and fields the server refuses.
  HeaderSeed("at-limits", Header(Limits().max_layers, Limits().max_heads, Limits().max_tokens,
                                 Limits().max_batch));
  HeaderSeed("past-limits", Header(Limits().max_layers + 1, 1, Limits().max_tokens + 1), false);
  HeaderSeed("empty", v1::PassHeader(), false);
  {
    v1::PassHeader h = Header(2, 2, 4);
    v1::RolloutOptions* a = Rollout(h);
    a->set_fusion(static_cast<v1::HeadFusion>(42));
    a->mutable_readout()->add_rows(7);
    h.set_row_sum_tolerance(1.5f);
    HeaderSeed("bad-fields", h, false);
  }
  {
    v1::PassHeader h = Header(0xffffffffu, 0xffffffffu, 0xffffffffu, 0x7fffffff);
    h.mutable_layout()->mutable_grid()->set_height(0xffffffffu);
    h.mutable_layout()->mutable_grid()->set_width(0xffffffffu);
    HeaderSeed("uint32-max", h, false);
  }
}

std::string CompareBytes(const v1::CompareRequest& r) { return r.SerializeAsString(); }

void CompareSeed(const std::string& name, const v1::CompareRequest& r, bool valid = true) {
  if (valid) {
    if (absl::StatusOr<v1::CompareResponse> c = session::RunCompare(r, Limits()); !c.ok()) Fail(name, c.status());
  }
  Write("compare", name, CompareBytes(r));
}

void CompareSeeds() {
  {
    v1::CompareRequest r;
    *r.mutable_a() = Uniform(v1::DTYPE_FP32, {12}, 0.0f, 1.0f);
    *r.mutable_b() = Uniform(v1::DTYPE_FP32, {12}, 0.0f, 1.0f);
    CompareSeed("flat", r);
  }
  {
    v1::CompareRequest r;
    *r.mutable_a() = Uniform(v1::DTYPE_FP16, {2, 4, 4}, 0.0f, 1.0f);
    *r.mutable_b() = Uniform(v1::DTYPE_FP16, {2, 4, 4}, 0.0f, 1.0f);
    r.mutable_options()->set_top_k(3);
    r.mutable_options()->set_ssim_window(3);
    *r.mutable_options()->mutable_region() = Uniform(v1::DTYPE_FP32, {16}, 0.0f, 1.0f);
    CompareSeed("grid-region", r);
  }
  {
    v1::CompareRequest r;
    *r.mutable_a() = Uniform(v1::DTYPE_BF16, {3, 9}, 0.0f, 1.0f);
    *r.mutable_b() = Uniform(v1::DTYPE_BF16, {3, 9}, 0.0f, 1.0f);
    r.mutable_options()->set_grid_height(3);
    r.mutable_options()->set_grid_width(3);
    r.mutable_options()->set_top_mass(0.5);
    CompareSeed("grid-options-top-mass", r);
  }
  {  // A constant map (undefined rank correlations) and ties.
    v1::CompareRequest r;
    *r.mutable_a() = TensorOf(v1::DTYPE_FP32, std::vector<float>(9, 1.0f), {3, 3});
    *r.mutable_b() = TensorOf(v1::DTYPE_FP32, {1, 1, 2, 2, 3, 3, 0, 0, 1}, {3, 3});
    CompareSeed("constant-ties", r);
  }
  {  // Refused: shapes differ, a negative value, grid that does not divide.
    v1::CompareRequest r;
    *r.mutable_a() = Uniform(v1::DTYPE_FP32, {6}, 0.0f, 1.0f);
    *r.mutable_b() = Uniform(v1::DTYPE_FP32, {2, 3}, 0.0f, 1.0f);
    CompareSeed("shape-mismatch", r, false);
    *r.mutable_b() = TensorOf(v1::DTYPE_FP32, {1, -1, 2, 0, 1, 1}, {6});
    CompareSeed("negative", r, false);
    *r.mutable_b() = Uniform(v1::DTYPE_FP32, {6}, 0.0f, 1.0f);
    r.mutable_options()->set_grid_height(4);
    r.mutable_options()->set_grid_width(4);
    CompareSeed("grid-mismatch", r, false);
  }
}

std::string AuditMessage(const std::function<void(v1::AuditRequest*)>& fill) {
  v1::AuditRequest r;
  fill(&r);
  return r.SerializeAsString();
}

void AuditSeed(const std::string& name, const std::vector<std::string>& messages, int items_ok) {
  if (items_ok >= 0) {
    // Run as the fuzz target runs it; every item must be accepted.
    std::unique_ptr<session::AuditSession> audit;
    int ok = 0;
    std::unique_ptr<PassDriver> base, cand;
    std::string id;
    for (const std::string& bytes : messages) {
      v1::AuditRequest r;
      r.ParseFromString(bytes);
      if (r.has_header()) {
        absl::StatusOr<std::unique_ptr<session::AuditSession>> s = session::AuditSession::Create(r.header(), Limits());
        if (!s.ok()) Fail(name, s.status());
        audit = *std::move(s);
      } else if (r.has_item()) {
        v1::AuditItemResult res = audit->AddItem(r.item());
        if (res.has_error()) Fail(name, absl::InvalidArgumentError(res.error().message()));
        ++ok;
      } else if (r.has_pass_begin()) {
        id = r.pass_begin().id();
        base = std::make_unique<PassDriver>(false);
        cand = std::make_unique<PassDriver>(false);
        if (!base->Open(r.pass_begin().pass())) Fail(name, base->status());
        if (!cand->Open(r.pass_begin().pass())) Fail(name, cand->status());
      } else if (r.has_pass_layer()) {
        PassDriver& side = r.pass_layer().candidate() ? *cand : *base;
        if (!side.Add(r.pass_layer().layer(), 0)) Fail(name, side.status());
      } else if (r.has_pass_end()) {
        v1::AuditItemResult res = audit->AddPassItem(id, "", *base->pass(), *cand->pass(), session::FinishContext());
        if (res.has_error()) Fail(name, absl::InvalidArgumentError(res.error().message()));
        ++ok;
      } else if (r.has_end()) {
        if (audit->Report().overall().items() != items_ok) {
          Fail(name, absl::InternalError(absl::StrCat("expected ", items_ok, " items in the report")));
        }
      }
    }
  }
  Write("audit", name, JoinMessages(messages));
}

void AuditSeeds() {
  auto header = [](v1::AuditRequest* r) {
    v1::AuditHeader* h = r->mutable_header();
    h->mutable_compare()->set_grid_height(3);
    h->mutable_compare()->set_grid_width(3);
    h->mutable_thresholds()->set_min_spearman(0.5);
    h->mutable_thresholds()->set_max_js_divergence(0.1);
    h->mutable_thresholds()->set_max_region_share_drop(0.1);
    *h->mutable_compare()->mutable_region() = TensorOf(v1::DTYPE_FP32, {1, 1, 0, 0, 1, 0, 0, 0, 0}, {9});
    h->set_worst_items(2);
  };
  auto item = [](const std::string& id, const std::string& group, v1::DType dtype) {
    return AuditMessage([&](v1::AuditRequest* r) {
      v1::AuditItem* it = r->mutable_item();
      it->set_id(id);
      it->set_group(group);
      *it->mutable_baseline() = Uniform(dtype, {3, 3}, 0.0f, 1.0f);
      *it->mutable_candidate() = Uniform(dtype, {9}, 0.0f, 1.0f);
    });
  };
  const std::string end = AuditMessage([](v1::AuditRequest* r) { r->mutable_end(); });
  AuditSeed("maps", {AuditMessage(header), item("a", "g1", v1::DTYPE_FP32), item("b", "g2", v1::DTYPE_FP16),
                     item("c", "g1", v1::DTYPE_BF16), end},
            3);
  {  // An attention item: both passes streamed (interleaved), then a map item.
    v1::PassHeader ph = Header(2, 2, 10);
    ph.mutable_layout()->set_prefix_tokens(1);
    ph.mutable_layout()->mutable_grid()->set_height(3);
    ph.mutable_layout()->mutable_grid()->set_width(3);
    Rollout(ph);
    std::vector<std::string> m = {AuditMessage(header), AuditMessage([&](v1::AuditRequest* r) {
                                    r->mutable_pass_begin()->set_id("pass-item");
                                    *r->mutable_pass_begin()->mutable_pass() = ph;
                                  })};
    const std::vector<v1::LayerChunk> base = Chunks(ph, Extras{v1::DTYPE_FP16});
    const std::vector<v1::LayerChunk> cand = Chunks(ph, Extras{v1::DTYPE_FP16});
    for (size_t i = 0; i < base.size(); ++i) {
      for (bool candidate : {false, true}) {
        m.push_back(AuditMessage([&](v1::AuditRequest* r) {
          r->mutable_pass_layer()->set_candidate(candidate);
          *r->mutable_pass_layer()->mutable_layer() = candidate ? cand[i] : base[i];
        }));
      }
    }
    m.push_back(AuditMessage([](v1::AuditRequest* r) { r->mutable_pass_end(); }));
    m.push_back(item("maps-after", "", v1::DTYPE_FP32));
    m.push_back(end);
    AuditSeed("pass-item", m, 2);
  }
  // Refused in-band (a wrong length) and at the call (an item before the header).
  AuditSeed("wrong-length",
            {AuditMessage(header), AuditMessage([](v1::AuditRequest* r) {
               r->mutable_item()->set_id("short");
               *r->mutable_item()->mutable_baseline() = Uniform(v1::DTYPE_FP32, {4}, 0.0f, 1.0f);
               *r->mutable_item()->mutable_candidate() = Uniform(v1::DTYPE_FP32, {4}, 0.0f, 1.0f);
             }),
             end},
            -1);
  AuditSeed("item-first", {item("x", "", v1::DTYPE_FP32), AuditMessage(header), end}, -1);
}

}  // namespace
}  // namespace attnroll::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus OUT_DIR\n");
    return 2;
  }
  attnroll::fuzz::out_dir = argv[1];
  attnroll::fuzz::PassSeeds();
  attnroll::fuzz::CompareSeeds();
  attnroll::fuzz::AuditSeeds();
  std::printf("make_corpus: wrote %d seeds under %s\n", attnroll::fuzz::written, argv[1]);
  return 0;
}
