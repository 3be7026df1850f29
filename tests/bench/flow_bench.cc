// Speed of exact attention flow (analysis::AttentionFlow), with LEMON's
// Preflow (an independent exact max flow) timed in the same run on the same
// graphs as the reference. A pass spreads the (output, input) pairs over the
// worker pool, one AttentionFlow per worker; the threads:2 cases do the same
// with two threads (this machine has 2 cores).
//
// Attention (seeded, built before timing): fused mean of 12 heads per layer,
// residual 0.5, rows renormalised, as the service hands it to the solver.
//   structured  per layer a mix of content heads (softmax of q.k over random
//               token embeddings), a CLS-sink head, a token-sink head (token
//               m/3, plus some CLS), a self head and a local head (14 x 14
//               patch grid for ViT, a 1-D band for BERT); the two middle layers
//               are bottlenecks (every head but one in four attends to the CLS
//               or the sink token).
//   selfstack   adversarial: as structured with half the heads self heads, the
//               bottleneck layers all sink heads, and the last 5 layers all self
//               heads (near-identity): most flows end below their bound and need
//               several BFS phases for the cut proof.
//   iid         softmax of i.i.d. N(0, 1) logits: every flow is its bound.
//
// Cases:
//   flow/vit_b16/<recipe>/cls     L=12 m=197: flow(0, j) for all 197 inputs j
//   flow/vit_b16/structured/full/threads:T  the whole 197 x 197 matrix, pairs
//                                 claimed one by one by T threads (as a pass)
//   flow/bert_base/<recipe>/cls   L=12 m=512: flow(0, j) for all 512 inputs
//   flow/bert_base/structured/cls/threads:2  the same on two threads
//   flow/bert_base/structured/rows8  8 output rows spread over the sequence;
//                                 the full 512 x 512 matrix is 64 x this
//   lemon/<shape>/structured/<cls|full>  LEMON Preflow (graph built before
//                                 timing, as the tests build it) on 24 of the
//                                 case's pairs spread over it; s_per_pair is
//                                 its time per pair, attnroll_s_per_pair
//                                 attnroll's on the same pairs (timed in the
//                                 same iterations), max_rel_diff the largest |attnroll - LEMON|
//                                 / LEMON over them
// Counters: s_per_row (seconds per output row), at_bound (share of pairs that
// stopped at min(colsum, rowsum), no cut proof), split (share of pairs the
// split certificate settled: an object's pairs from a source's second use
// on), aug_per_pair (including the split's searches), arcs_per_pair.
//
// --dump_dir=DIR (taken out of argv before Google Benchmark parses it) writes
// DIR/<shape>_<recipe>.npy (float32 [L, m, m], At_1..At_L) and
// DIR/<shape>_<recipe>_cls.npy (float64 [m], attnroll's flow(0, j)) for the
// cases above and exits; tests/bench/networkx_flow.py times networkx on them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <atomic>
#include <chrono>
#include <thread>

#include <benchmark/benchmark.h>

#include "server/analysis/attention_flow.h"
#include "tests/analysis/lemon_flow_testutil.h"

namespace {

namespace analysis = attnroll::analysis;
using analysis::MatrixF;

struct Shape {
  const char* name;
  int layers, heads, tokens, grid_w;  // grid_w = 0: 1-D token order
};
constexpr Shape kVit{"vit_b16", 12, 12, 197, 14};
constexpr Shape kBert{"bert_base", 12, 12, 512, 0};

enum class Recipe { kStructured, kSelfStack, kIid };
const char* RecipeName(Recipe r) {
  switch (r) {
    case Recipe::kStructured: return "structured";
    case Recipe::kSelfStack: return "selfstack";
    case Recipe::kIid: return "iid";
  }
  return "?";
}

void SoftmaxRows(MatrixF& a) {
  for (int i = 0; i < a.rows(); ++i) {
    const float mx = a.row(i).maxCoeff();
    a.row(i) = (a.row(i).array() - mx).exp().matrix();
    a.row(i) /= a.row(i).sum();
  }
}

// Squared distance of tokens i and j: on the patch grid (token 0 = CLS sits
// apart) or along the sequence.
float Distance2(int i, int j, int grid_w) {
  if (grid_w > 0) {
    if (i == 0 || j == 0) return i == j ? 0.0f : 100.0f;
    const int di = (i - 1) / grid_w - (j - 1) / grid_w, dj = (i - 1) % grid_w - (j - 1) % grid_w;
    return static_cast<float>(di * di + dj * dj);
  }
  return static_cast<float>((i - j) * (i - j));
}

std::vector<MatrixF> MakeLayers(const Shape& s, Recipe recipe, uint32_t seed = 1) {
  const int L = s.layers, H = s.heads, m = s.tokens, d = 16;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto gaussian = [&](int rows, int cols, float scale) {
    MatrixF x(rows, cols);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) x(i, j) = scale * normal(rng);
    return x;
  };
  const MatrixF emb = gaussian(m, d, 1.0f);
  const int sink_token = m / 3;
  std::vector<MatrixF> layers;
  for (int l = 0; l < L; ++l) {
    MatrixF fused = MatrixF::Zero(m, m);
    const bool bottleneck = l >= L / 2 - 1 && l <= L / 2;
    for (int h = 0; h < H; ++h) {
      MatrixF logits;
      if (recipe == Recipe::kIid) {
        logits = gaussian(m, m, 1.0f);
      } else {
        // 0, 5 content; 1 CLS sink; 2 token sink; 3 self; 4 local.
        int kind = (h + l) % 6;
        if (recipe == Recipe::kSelfStack && (h % 2 == 0 || l >= L - 5)) kind = 3;
        if (bottleneck && (recipe == Recipe::kSelfStack || h % 4 != 3)) kind = h % 2 ? 1 : 2;
        const MatrixF q = emb + gaussian(m, d, 0.5f), k = emb + gaussian(m, d, 0.5f);
        logits = (q * k.transpose()) * (0.6f / std::sqrt(static_cast<float>(d)));
        for (int i = 0; i < m; ++i) {
          switch (kind) {
            case 1: logits(i, 0) += 7.0f; break;
            case 2: logits(i, sink_token) += 7.0f; logits(i, 0) += 4.0f; break;
            case 3: logits(i, i) += 6.0f; break;
            case 4:
              for (int j = 0; j < m; ++j) logits(i, j) += 4.0f - 1.5f * Distance2(i, j, s.grid_w);
              break;
            default: break;
          }
        }
      }
      SoftmaxRows(logits);
      fused += logits;
    }
    fused /= static_cast<float>(H);
    MatrixF at = 0.5f * fused + 0.5f * MatrixF::Identity(m, m);
    for (int i = 0; i < m; ++i) at.row(i) /= at.row(i).sum();
    layers.push_back(std::move(at));
  }
  return layers;
}

const std::vector<MatrixF>& Layers(const Shape& s, Recipe recipe) {
  static std::map<std::string, std::vector<MatrixF>> cache;
  const std::string key = std::string(s.name) + "/" + RecipeName(recipe);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, MakeLayers(s, recipe)).first;
  return it->second;
}

// Runs the given output rows (all sources each) once per iteration.
void RunRows(benchmark::State& state, const Shape& s, Recipe recipe, std::vector<int> sinks) {
  const std::vector<MatrixF>& layers = Layers(s, recipe);
  const int m = s.tokens;
  std::vector<double> row(m);
  int64_t pairs = 0, at_bound = 0, aug = 0, arcs = 0, split = 0;
  double checksum = 0;
  for (auto _ : state) {
    analysis::AttentionFlow flow(layers);  // a worker's object: built per pass
    for (int sink : sinks) {
      for (int j = 0; j < m; ++j) {
        row[j] = flow.MaxFlow(j, sink);
        const analysis::AttentionFlow::Stats& st = flow.last_stats();
        ++pairs;
        at_bound += st.hit_bound;
        split += st.split;
        aug += st.augmentations;
        arcs += st.arcs_scanned;
      }
      checksum += row[0];
    }
    benchmark::DoNotOptimize(checksum);
  }
  state.counters["at_bound"] = static_cast<double>(at_bound) / static_cast<double>(pairs);
  state.counters["aug_per_pair"] = static_cast<double>(aug) / static_cast<double>(pairs);
  state.counters["split"] = static_cast<double>(split) / static_cast<double>(pairs);
  state.counters["arcs_per_pair"] = static_cast<double>(arcs) / static_cast<double>(pairs);
  // Seconds per output row (all m sources), printed with an SI prefix.
  state.counters["s_per_row"] = benchmark::Counter(
      static_cast<double>(sinks.size()),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetLabel(std::to_string(sinks.size()) + " rows x " + std::to_string(m) + " sources");
}

// The given output rows, all sources each, on `threads` threads: pairs are
// claimed one at a time from a shared counter, one AttentionFlow per thread
// (what a pass does on its worker pool).
void RunRowsThreads(benchmark::State& state, const Shape& s, Recipe recipe,
                    std::vector<int> sinks, int threads) {
  const std::vector<MatrixF>& layers = Layers(s, recipe);
  const int m = s.tokens;
  const int64_t items = static_cast<int64_t>(sinks.size()) * m;
  std::vector<double> out(static_cast<size_t>(items));
  std::atomic<int64_t> at_bound{0}, aug_total{0}, split_total{0};
  for (auto _ : state) {
    std::atomic<int64_t> next{0};
    auto worker = [&] {
      analysis::AttentionFlow flow(layers);
      int64_t hits = 0, aug = 0, split = 0;
      for (int64_t item = next.fetch_add(1); item < items; item = next.fetch_add(1)) {
        out[item] = flow.MaxFlow(static_cast<int>(item % m), sinks[item / m]);
        hits += flow.last_stats().hit_bound;
        aug += flow.last_stats().augmentations;
        split += flow.last_stats().split;
      }
      at_bound += hits;
      aug_total += aug;
      split_total += split;
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool) t.join();
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["at_bound"] = static_cast<double>(at_bound.load()) /
                               (static_cast<double>(items) * static_cast<double>(state.iterations()));
  const double pairs = static_cast<double>(items) * static_cast<double>(state.iterations());
  state.counters["aug_per_pair"] = static_cast<double>(aug_total.load()) / pairs;
  state.counters["split"] = static_cast<double>(split_total.load()) / pairs;
  state.counters["s_per_row"] = benchmark::Counter(
      static_cast<double>(sinks.size()),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetLabel(std::to_string(sinks.size()) + " rows x " + std::to_string(m) + " sources, " +
                 std::to_string(threads) + " threads");
}

using attnroll::testutil::LemonFlow;

// LEMON on `count` pairs (output, input) spread evenly over the given rows x
// all inputs; attnroll on the same pairs (timed separately, same iteration).
void RunLemon(benchmark::State& state, const Shape& s, Recipe recipe, std::vector<int> sinks,
              int count) {
  const std::vector<MatrixF>& layers = Layers(s, recipe);
  const int m = s.tokens;
  const int64_t items = static_cast<int64_t>(sinks.size()) * m;
  std::vector<std::pair<int, int>> pairs;  // (sink, source)
  for (int t = 0; t < count; ++t) {
    const int64_t item = (2 * t + 1) * items / (2 * count);
    pairs.push_back({sinks[item / m], static_cast<int>(item % m)});
  }
  LemonFlow lemon(layers);
  analysis::AttentionFlow flow(layers);
  double max_rel = 0, ours_seconds = 0;
  for (auto _ : state) {
    std::vector<double> want(pairs.size());
    for (size_t k = 0; k < pairs.size(); ++k) want[k] = lemon(pairs[k].second, pairs[k].first);
    state.PauseTiming();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<double> got(pairs.size());
    for (size_t k = 0; k < pairs.size(); ++k) got[k] = flow.MaxFlow(pairs[k].second, pairs[k].first);
    ours_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t k = 0; k < pairs.size(); ++k)
      max_rel = std::max(max_rel, std::abs(got[k] - want[k]) / std::max(want[k], 1e-300));
    state.ResumeTiming();
  }
  const double n = static_cast<double>(pairs.size());
  state.counters["s_per_pair"] = benchmark::Counter(
      n, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["attnroll_s_per_pair"] =
      ours_seconds / (n * static_cast<double>(state.iterations()));
  state.counters["max_rel_diff"] = max_rel;
  state.SetLabel(std::to_string(pairs.size()) + " pairs");
}

std::vector<int> AllRows(int m) {
  std::vector<int> r(m);
  for (int i = 0; i < m; ++i) r[i] = i;
  return r;
}

std::vector<int> SpreadRows(int m, int k) {
  std::vector<int> r;
  for (int t = 0; t < k; ++t) r.push_back(static_cast<int>(static_cast<int64_t>(t) * m / k));
  return r;
}

void RegisterAll() {
  auto reg = [](const std::string& name, const Shape& s, Recipe recipe, std::vector<int> sinks,
                int iterations) {
    auto* b = benchmark::RegisterBenchmark(
        name.c_str(), [s, recipe, sinks](benchmark::State& st) { RunRows(st, s, recipe, sinks); });
    b->Unit(benchmark::kMillisecond)->UseRealTime();
    if (iterations > 0) b->Iterations(iterations);
  };
  auto reg_threads = [](const std::string& name, const Shape& s, Recipe recipe,
                        std::vector<int> sinks, int threads, int iterations) {
    auto* b = benchmark::RegisterBenchmark(
        (name + "/threads:" + std::to_string(threads)).c_str(),
        [s, recipe, sinks, threads](benchmark::State& st) {
          RunRowsThreads(st, s, recipe, sinks, threads);
        });
    b->Unit(benchmark::kMillisecond)->UseRealTime();
    if (iterations > 0) b->Iterations(iterations);
  };
  auto reg_lemon = [](const std::string& name, const Shape& s, std::vector<int> sinks) {
    auto* b = benchmark::RegisterBenchmark(name.c_str(), [s, sinks](benchmark::State& st) {
      RunLemon(st, s, Recipe::kStructured, sinks, 24);
    });
    b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
  };
  for (Recipe r : {Recipe::kStructured, Recipe::kSelfStack, Recipe::kIid})
    reg(std::string("flow/vit_b16/") + RecipeName(r) + "/cls", kVit, r, {0}, 0);
  for (int threads : {1, 2})
    reg_threads("flow/vit_b16/structured/full", kVit, Recipe::kStructured, AllRows(kVit.tokens),
                threads, 1);
  for (Recipe r : {Recipe::kStructured, Recipe::kSelfStack})
    reg(std::string("flow/bert_base/") + RecipeName(r) + "/cls", kBert, r, {0}, 1);
  reg_threads("flow/bert_base/structured/cls", kBert, Recipe::kStructured, {0}, 2, 1);
  reg("flow/bert_base/structured/rows8", kBert, Recipe::kStructured, SpreadRows(kBert.tokens, 8),
      1);
  reg_lemon("lemon/vit_b16/structured/cls", kVit, {0});
  reg_lemon("lemon/vit_b16/structured/full", kVit, AllRows(kVit.tokens));
  reg_lemon("lemon/bert_base/structured/cls", kBert, {0});
}

// ---- --dump_dir ---------------------------------------------------------------

void WriteNpy(const std::string& path, const char* descr, const std::vector<int64_t>& shape,
              const void* data, size_t bytes) {
  std::string dims;
  for (int64_t n : shape) dims += std::to_string(n) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 1);  // "(3, 4)" / "(5,)"
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" +
                       dims + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(len_le, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!f) std::fprintf(stderr, "flow_bench: cannot write %s\n", path.c_str());
}

int Dump(const std::string& dir) {
  struct Item {
    const Shape& shape;
    Recipe recipe;
  };
  const Item items[] = {{kVit, Recipe::kStructured}, {kVit, Recipe::kSelfStack},
                        {kVit, Recipe::kIid},        {kBert, Recipe::kStructured}};
  for (const Item& it : items) {
    const std::vector<MatrixF>& layers = Layers(it.shape, it.recipe);
    const int L = it.shape.layers, m = it.shape.tokens;
    const std::string base = dir + "/" + it.shape.name + "_" + RecipeName(it.recipe);
    std::vector<float> all;
    all.reserve(static_cast<size_t>(L) * m * m);
    for (const MatrixF& a : layers) all.insert(all.end(), a.data(), a.data() + a.size());
    WriteNpy(base + ".npy", "<f4", {L, m, m}, all.data(), all.size() * sizeof(float));
    analysis::AttentionFlow flow(layers);
    std::vector<double> row(m);
    flow.FlowRow(0, row.data());
    WriteNpy(base + "_cls.npy", "<f8", {m}, row.data(), row.size() * sizeof(double));
    std::printf("%s.npy\n", base.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args;
  std::string dump_dir;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--dump_dir=", 11) == 0) {
      dump_dir = argv[i] + 11;
    } else {
      args.push_back(argv[i]);
    }
  }
  if (!dump_dir.empty()) return Dump(dump_dir);
  int n = static_cast<int>(args.size());
  RegisterAll();
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
