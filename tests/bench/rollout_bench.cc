// Speed of a whole pass through the server's worker code, without gRPC:
//   PlanPass(header) -> PassSession(plan) -> AddChunk(layer) x L -> Finish()
// i.e. decode + validate + fuse heads + residual + fold + read-out, exactly what
// a worker does with the messages of one Explain call. The attention is random
// row-stochastic (softmax of seeded random logits), encoded beforehand as
// v1::LayerChunk protos with the client's encoder; building it is not timed.
//
// Cases (shapes and rows as tests/bench/peers.py times its peers):
//   pass/{vit_b16,bert_base,vit_l16}_cls/{fp32,fp16,bf16}   CLS row (row path)
//       ViT-B/16 12x12x197, BERT-base 12x12x512, ViT-L/16 24x16x577
//   pass/causal_2048_last/{fp32,fp16}  L=32 H=32 n=2048, causal, last row; ONE
//                                    layer chunk re-sent as every layer
//   pass/.../2_threads               one pass on this thread + an idle pool worker
//   pass/*_per_layer/...             per-layer read-outs (chain path)
//   math/...                         SequenceRollout alone on decoded fp32
//   decode/..., validate/...         one head of the session's decode / checks
//   probe/read_bandwidth[_4k_pages], probe/memcpy, probe/sgemm_{openblas,eigen}/N
//                                    this machine's bounds, in the same run
// Counters: GB/s = attention bytes as sent (wire dtype) / wall time;
// faults_per_pass = minor page faults per pass (large buffers pooled as the
// server pools them).
// The label of a pass case is the path the server chose (row or chain).
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <immintrin.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include "attnroll/v1/attnroll.pb.h"
#include "client/cpp/tensor_encode.h"
#include "server/analysis/rollout.h"
#include "server/runtime/config.h"
#include "server/session/analysis_options.h"
#include "server/session/attention_decode.h"
#include "server/session/pass_plan.h"
#include "server/analysis/blas.h"
#include "server/analysis/fuse_kernels.h"
#include "server/session/pass_buffers.h"
#include "server/runtime/worker_pool.h"
#include "server/session/pass_session.h"

namespace {

namespace v1 = attnroll::v1;
namespace analysis = attnroll::analysis;
namespace session = attnroll::session;

// ---- shapes and requests ------------------------------------------------------

struct Shape {
  const char* name;
  int layers, heads, tokens;
  bool causal;
  int prefix;          // P
  int grid_h, grid_w;  // 0 => flat maps
};

constexpr Shape kVit{"vit_b16", 12, 12, 197, false, 1, 14, 14};
constexpr Shape kVitL{"vit_l16", 24, 16, 577, false, 1, 24, 24};
constexpr Shape kBert{"bert_base", 12, 12, 512, false, 1, 0, 0};
constexpr Shape kCausal{"causal_2048", 32, 32, 2048, true, 0, 0, 0};

struct Request {
  std::vector<uint32_t> rows;  // empty => row 0
  bool mean_of_rows = false;
  bool per_layer = false;
};

v1::PassHeader MakeHeader(const Shape& s, const Request& r) {
  v1::PassHeader header;
  header.set_request_id("bench");
  v1::Layout* layout = header.mutable_layout();
  layout->set_num_layers(s.layers);
  layout->set_num_heads(s.heads);
  layout->set_num_tokens(s.tokens);
  layout->set_batch_size(1);
  layout->set_prefix_tokens(s.prefix);
  if (s.grid_h > 0) {
    layout->mutable_grid()->set_height(s.grid_h);
    layout->mutable_grid()->set_width(s.grid_w);
  }
  layout->set_causal(s.causal);
  v1::RolloutOptions* ro = header.add_analyses()->mutable_rollout();
  for (uint32_t row : r.rows) ro->mutable_readout()->add_rows(row);
  ro->mutable_readout()->set_mean_of_rows(r.mean_of_rows);
  ro->set_per_layer(r.per_layer);
  return header;
}

// ---- data -------------------------------------------------------------------

// One head: rows are softmax(scale * z), z ~ N(0, 1), scale ~ U(1, 6) per head
// (as peers.py); causal rows only over columns 0..i.
void FillHead(std::mt19937_64& rng, int n, bool causal, std::vector<float>& a) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float scale = std::uniform_real_distribution<float>(1.0f, 6.0f)(rng);
  a.assign(static_cast<size_t>(n) * n, 0.0f);
  for (int i = 0; i < n; ++i) {
    float* row = a.data() + static_cast<size_t>(i) * n;
    const int len = causal ? i + 1 : n;
    float mx = -INFINITY;
    for (int j = 0; j < len; ++j) {
      row[j] = scale * normal(rng);
      mx = std::max(mx, row[j]);
    }
    double sum = 0;
    for (int j = 0; j < len; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int j = 0; j < len; ++j) row[j] *= inv;
  }
}

// The chunks of one pass: one per layer (all heads, batch 1), or a single
// chunk re-sent as every layer (`shared`, for the causal shape).
struct PassData {
  std::vector<v1::LayerChunk> chunks;
  bool shared = false;
  int64_t bytes_per_pass = 0;  // wire bytes of all L layers
};

PassData* GetPassData(const Shape& s, v1::DType dtype, bool shared) {
  static std::map<std::tuple<std::string, int, bool>, std::unique_ptr<PassData>> cache;
  auto& slot = cache[{s.name, static_cast<int>(dtype), shared}];
  if (slot) return slot.get();
  slot = std::make_unique<PassData>();
  PassData& d = *slot;
  d.shared = shared;
  std::mt19937_64 rng(20240601u + s.tokens);
  std::vector<float> head;
  const int distinct = shared ? 1 : s.layers;
  for (int l = 0; l < distinct; ++l) {
    v1::LayerChunk& chunk = d.chunks.emplace_back();
    chunk.set_layer(l);
    chunk.set_head_start(0);
    v1::Tensor* t = chunk.mutable_attention();
    t->set_dtype(dtype);
    for (int64_t dim : {int64_t{1}, int64_t{s.heads}, int64_t{s.tokens}, int64_t{s.tokens}}) {
      t->add_shape(dim);
    }
    std::string* data = t->mutable_data();
    data->reserve(static_cast<size_t>(s.heads) * s.tokens * s.tokens *
                  attnroll::client::WireSize(dtype));
    for (int h = 0; h < s.heads; ++h) {
      FillHead(rng, s.tokens, s.causal, head);
      attnroll::client::AppendEncoded(dtype, head.data(), head.size(), data);
    }
  }
  d.bytes_per_pass = static_cast<int64_t>(d.chunks[0].attention().data().size()) * s.layers;
  return &d;
}

void SetBytesCounter(benchmark::State& state, int64_t bytes_per_iteration) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes_per_iteration);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes_per_iteration) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// ---- whole pass through PassSession ------------------------------------------

int64_t MinorFaults() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

void BM_Pass(benchmark::State& state, Shape s, v1::DType dtype, Request r, bool shared, int threads) {
  PassData* data = GetPassData(s, dtype, shared);
  const v1::PassHeader header = MakeHeader(s, r);
  const attnroll::runtime::PassLimits limits;
  std::string path;
  double compute_seconds = 0;
  // As the server does: large buffers pooled across passes.
  session::UsePooledPassBuffers(attnroll::runtime::ServerConfig().buffer_cache_bytes);
  const int64_t faults0 = MinorFaults();
  for (auto _ : state) {
    absl::StatusOr<session::PassPlan> plan = session::PlanPass(header, limits);
    if (!plan.ok()) {
      state.SkipWithError(std::string(plan.status().message()).c_str());
      break;
    }
    auto pass = std::make_unique<session::PassSession>(*std::move(plan));
    if (threads > 1) {  // this thread and idle pool workers share large messages
      static attnroll::runtime::WorkerPool* pool = new attnroll::runtime::WorkerPool(threads - 1, 1, 64);
      pass->UseHelpers(pool, threads - 1);
    }
    absl::Status status;
    for (int l = 0; l < s.layers && status.ok(); ++l) {
      v1::LayerChunk& chunk = data->chunks[data->shared ? 0 : l];
      if (data->shared) chunk.set_layer(l);  // same bytes, next layer: same compute
      status = pass->AddChunk(chunk);
    }
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      break;
    }
    absl::StatusOr<v1::ExplainResponse> response = pass->Finish();
    if (!response.ok()) {
      state.SkipWithError(std::string(response.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(response->results(0).maps(0).data().data());
    path = response->results(0).path();
    compute_seconds = response->timing().compute_seconds();
  }
  state.counters["faults_per_pass"] =
      static_cast<double>(MinorFaults() - faults0) / std::max<int64_t>(1, state.iterations());
  state.SetLabel(path + " " + analysis::KernelIsaName(analysis::ActiveKernelIsa()));
  state.counters["compute_ms"] = compute_seconds * 1e3;  // the server's own timing, last pass
  SetBytesCounter(state, data->bytes_per_pass);
}

// ---- the math alone, on already decoded fp32 ---------------------------------

void BM_Math(benchmark::State& state, Shape s, Request r, bool shared) {
  // Decode the same wire data once with the session's decoder, keep fp32.
  PassData* data = GetPassData(s, shared ? v1::DTYPE_FP16 : v1::DTYPE_FP32, shared);
  const size_t nn = static_cast<size_t>(s.tokens) * s.tokens;
  std::vector<std::vector<float>> layers;
  for (const v1::LayerChunk& chunk : data->chunks) {
    std::vector<float>& f = layers.emplace_back(nn * s.heads);
    for (int h = 0; h < s.heads; ++h) {
      session::DecodeBlock(chunk.attention().dtype(), chunk.attention().data(),
                           static_cast<int64_t>(h) * nn, s.tokens, s.tokens, s.tokens,
                           f.data() + h * nn);
    }
  }
  const v1::PassHeader header = MakeHeader(s, r);
  absl::StatusOr<analysis::RolloutSpec> spec =
      session::ToRolloutSpec(header.analyses(0).rollout(), header.layout());
  if (!spec.ok()) {
    state.SkipWithError(std::string(spec.status().message()).c_str());
    return;
  }
  const analysis::RolloutPath path = analysis::ChooseRolloutPath(*spec, s.layers, s.tokens);
  for (auto _ : state) {
    analysis::SequenceRollout rollout(*spec, s.layers, s.heads, s.tokens, path);
    for (int l = 0; l < s.layers; ++l) {
      const float* base = layers[shared ? 0 : l].data();
      for (int h = 0; h < s.heads; ++h) {
        rollout.AddHead(l, h, analysis::ConstMatrixView(base + h * nn, s.tokens, s.tokens,
                                                        Eigen::OuterStride<>(s.tokens)));
      }
    }
    analysis::Maps maps = rollout.Finish();
    benchmark::DoNotOptimize(maps.values.data());
  }
  state.SetLabel(analysis::RolloutPathName(path));
  // fp32 bytes the math reads (L x H x n x n x 4).
  SetBytesCounter(state, static_cast<int64_t>(nn) * s.heads * s.layers * 4);
}

// ---- one head of the session's decode and validation -------------------------

void BM_Decode(benchmark::State& state, Shape s, v1::DType dtype) {
  PassData* data = GetPassData(s, dtype, s.causal);
  const v1::Tensor& t = data->chunks[0].attention();
  std::vector<float> out(static_cast<size_t>(s.tokens) * s.tokens);
  for (auto _ : state) {
    session::DecodeBlock(t.dtype(), t.data(), 0, s.tokens, s.tokens, s.tokens, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetBytesCounter(state, static_cast<int64_t>(out.size()) * session::DTypeSize(dtype));
}

void BM_Validate(benchmark::State& state, Shape s) {
  PassData* data = GetPassData(s, s.causal ? v1::DTYPE_FP16 : v1::DTYPE_FP32, s.causal);
  const v1::Tensor& t = data->chunks[0].attention();
  std::vector<float> a(static_cast<size_t>(s.tokens) * s.tokens);
  session::DecodeBlock(t.dtype(), t.data(), 0, s.tokens, s.tokens, s.tokens, a.data());
  const float tol = session::DefaultRowSumTolerance(t.dtype());
  for (auto _ : state) {
    absl::Status st = session::ValidateAttentionBlock(a.data(), s.tokens, tol, s.causal, {0, 0, 0});
    if (!st.ok()) {
      state.SkipWithError(std::string(st.message()).c_str());
      break;
    }
  }
  SetBytesCounter(state, static_cast<int64_t>(a.size()) * 4);  // fp32 bytes checked
}

// ---- the machine's bounds, measured in the same run ---------------------------

// Read bandwidth of one core: sum a 1 GiB buffer (far larger than any cache)
// with 8 independent vector accumulators.
__attribute__((target("avx2"))) float SumAvx2(const float* a, size_t n) {
  __m256 s[8];
  for (__m256& x : s) x = _mm256_setzero_ps();
  for (size_t i = 0; i + 64 <= n; i += 64) {
    for (int k = 0; k < 8; ++k) s[k] = _mm256_add_ps(s[k], _mm256_loadu_ps(a + i + 8 * k));
  }
  for (int k = 1; k < 8; ++k) s[0] = _mm256_add_ps(s[0], s[k]);
  float out[8];
  _mm256_storeu_ps(out, s[0]);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

float* MapFloats(size_t n, bool huge_pages) {
  void* p = mmap(nullptr, n * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(p, n * 4, huge_pages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  float* f = static_cast<float*>(p);
  for (size_t i = 0; i < n; ++i) f[i] = 1.0f;
  return f;
}

// On transparent huge pages (the bound), and on 4 KiB pages: where the wire
// bytes of a pass are (protobuf's strings, allocated by malloc).
void BM_ReadBandwidth(benchmark::State& state, bool huge_pages) {
  const size_t n = size_t{1} << 28;  // 1 GiB of floats
  static float* huge = nullptr;
  static float* small = nullptr;
  float*& buf = huge_pages ? huge : small;
  if (buf == nullptr) buf = MapFloats(n, huge_pages);
  for (auto _ : state) benchmark::DoNotOptimize(SumAvx2(buf, n));
  SetBytesCounter(state, static_cast<int64_t>(n) * 4);
}

// memcpy of 256 MiB (the copy cost of bytes on this machine).
void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  SetBytesCounter(state, static_cast<int64_t>(bytes));
}

// sgemm of m x m fp32 matrices, one thread: OpenBLAS (as the chain path
// calls it) and Eigen.
void BM_Sgemm(benchmark::State& state, int m, bool eigen) {
  analysis::MatrixF a = analysis::MatrixF::Random(m, m), b = analysis::MatrixF::Random(m, m), c(m, m);
  for (auto _ : state) {
    if (eigen) {
      c.noalias() = a * b;
    } else {
      analysis::GemmRows(a.data(), m, m, b.data(), m, c.data());
    }
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * m * m / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(eigen ? "Eigen" : analysis::BlasDescription());
}

// ---- registration -------------------------------------------------------------

void RegisterAll() {
  using benchmark::RegisterBenchmark;
  const Request cls{{0}, false, false};
  const Request last{{2047}, false, false};
  const Request cls_per_layer{{0}, false, true};
  const Request mean_per_layer{{}, true, true};

  auto pass = [](const std::string& name, Shape s, v1::DType dtype, Request r, bool shared,
                 int threads = 1) {
    return RegisterBenchmark(name.c_str(), BM_Pass, s, dtype, r, shared, threads)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  };
  const std::pair<v1::DType, const char*> dtypes[] = {
      {v1::DTYPE_FP32, "fp32"}, {v1::DTYPE_FP16, "fp16"}, {v1::DTYPE_BF16, "bf16"}};
  // Row read-outs (the row path), every wire dtype.
  for (Shape s : {kVit, kBert, kVitL}) {
    for (const auto& [dt, name] : dtypes) {
      pass(std::string("pass/") + s.name + "_cls/" + name, s, dt, cls, false)->MinTime(0.5);
    }
  }
  for (const auto& [dt, name] : dtypes) {
    if (dt == v1::DTYPE_BF16) continue;
    pass(std::string("pass/causal_2048_last/") + name, kCausal, dt, last, true)
        ->Iterations(1)
        ->Repetitions(3);
  }
  // One large pass on two threads (this one and an idle pool worker).
  pass("pass/bert_base_cls/fp32/2_threads", kBert, v1::DTYPE_FP32, cls, false, 2)->MinTime(0.5);
  pass("pass/vit_l16_cls/fp32/2_threads", kVitL, v1::DTYPE_FP32, cls, false, 2)->MinTime(0.5);
  pass("pass/causal_2048_last/fp16/2_threads", kCausal, v1::DTYPE_FP16, last, true, 2)
      ->Iterations(1)
      ->Repetitions(3);
  // Full matrices (the chain path).
  pass("pass/vit_b16_per_layer/fp32", kVit, v1::DTYPE_FP32, cls_per_layer, false)->MinTime(0.5);
  pass("pass/bert_base_per_layer/fp32", kBert, v1::DTYPE_FP32, cls_per_layer, false)->MinTime(0.5);
  pass("pass/bert_base_per_layer/fp16", kBert, v1::DTYPE_FP16, cls_per_layer, false)->MinTime(0.5);
  pass("pass/bert_base_mean_per_layer/fp32", kBert, v1::DTYPE_FP32, mean_per_layer, false)
      ->MinTime(0.5);
  pass("pass/vit_l16_per_layer/fp32", kVitL, v1::DTYPE_FP32, cls_per_layer, false)->MinTime(0.5);
  pass("pass/vit_l16_per_layer/fp16", kVitL, v1::DTYPE_FP16, cls_per_layer, false)->MinTime(0.5);

  RegisterBenchmark("math/vit_b16_cls/fp32", BM_Math, kVit, cls, false)
      ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
  RegisterBenchmark("math/causal_2048_last/fp32", BM_Math, kCausal, last, true)
      ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);

  for (Shape s : {kVit, kCausal}) {
    const std::string n = std::to_string(s.tokens);
    for (v1::DType dt : {v1::DTYPE_FP32, v1::DTYPE_FP16}) {
      if (s.causal && dt == v1::DTYPE_FP32) continue;  // only fp16 data is built for it
      RegisterBenchmark(("decode/head_" + n + "/" + (dt == v1::DTYPE_FP16 ? "fp16" : "fp32")).c_str(),
                        BM_Decode, s, dt)
          ->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
    RegisterBenchmark(("validate/head_" + n + (s.causal ? "/causal" : "")).c_str(), BM_Validate, s)
        ->Unit(benchmark::kMicrosecond)->UseRealTime();
  }

  // The bounds of this machine, in this run.
  RegisterBenchmark("probe/read_bandwidth", BM_ReadBandwidth, true)
      ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
  RegisterBenchmark("probe/read_bandwidth_4k_pages", BM_ReadBandwidth, false)
      ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
  RegisterBenchmark("probe/memcpy", BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
  for (int m : {512, 577, 1024}) {
    RegisterBenchmark(("probe/sgemm_openblas/" + std::to_string(m)).c_str(), BM_Sgemm, m, false)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
    RegisterBenchmark(("probe/sgemm_eigen/" + std::to_string(m)).c_str(), BM_Sgemm, m, true)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
  }
}

}  // namespace

int main(int argc, char** argv) {
  RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
