// `attnroll bench`: a closed-loop load test. C client threads each send one
// pass at a time, back to back, for a duration or a number of passes; every
// pass is the same synthetic attention, generated and encoded once
// (client::PreparedPass), so what is measured is the transport and the
// server, not the client's data generation or encoding. --rpc arrays
// instead hands the float32 arrays to Client::Explain on every pass, so the
// client's own work (head fusion, encoding) is inside the timed call, as a
// model server calling the C++ client pays it.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/cpp/attnroll_client.h"
#include "client/cpp/tensor_encode.h"
#include "proto/cpp/client_fusion.h"

namespace attnroll::cli {
namespace {

constexpr double kMaxDurationSeconds = 3600;
constexpr double kMaxWarmupSeconds = 600;
constexpr int64_t kMaxRequests = 10'000'000;
constexpr int kMaxConcurrency = 1024;
constexpr int kDefaultMaxChannels = 4;
// Client memory of the synthetic pass (its wire bytes plus one fp32 layer
// being generated, and with --rpc arrays every fp32 layer), refused above this.
// Not counted: each --rpc arrays call's own fused copy or encoded layer.
constexpr double kMaxClientBytes = 4.0 * (int64_t{1} << 30);
// Slack of a pass's deadline beyond the measured duration.
constexpr double kDeadlineSlackSeconds = 30;
// Deadline of the GetServerInfo call that checks the server is reachable.
constexpr double kInfoTimeoutSeconds = 10;

int Usage(const std::string& message) { return UsageError("bench", message); }

void PrintBenchUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] [--timeout S] bench --shape L,H,n [options]\n\n"
      "Closed-loop load: --concurrency threads each send one pass at a time, back to back,\n"
      "until --duration seconds or --requests passes. Every pass is the same synthetic\n"
      "attention (row softmax of N(0, 1) logits, [B, L, H, n, n], deterministic from --seed),\n"
      "generated and encoded to the wire dtype once, so the numbers are the transport's and\n"
      "the server's (--rpc arrays: and the client's fusion and encoding of each pass). A\n"
      "warm-up (--warmup) runs first and is not counted.\n\n"
      "  --shape L,H,n            layers, heads, tokens of a pass (required)\n"
      "  --batch B                sequences per pass (default 1)\n"
      "  --wire fp32|fp16|bf16    dtype on the wire (default fp32)\n"
      "  --method M               rollout (default), grad-rollout (a synthetic gradient is\n"
      "                           sent too), flow, or null: the validate-only analysis (the\n"
      "                           server decodes and validates, computes nothing: the\n"
      "                           transport's ceiling)\n"
      "  --rows I,J,...           rows read out (default 0; not with --method null)\n"
      "  --rpc explain|stream|arrays  Explain, one call per pass (default), or one\n"
      "                           ExplainStream per thread, one pass open at a time, or\n"
      "                           arrays: Explain from the float32 arrays in memory, each\n"
      "                           pass fused (--client-fusion) and encoded inside its call\n"
      "                           (Client::Explain fuses by default; the bench only when told)\n"
      "  --concurrency C          client threads, 1..%d (default 1)\n"
      "  --channels K             gRPC channels, each its own TCP connection, 1..C; thread i\n"
      "                           uses channel i mod K (default min(C, %d): one connection\n"
      "                           carries its HTTP/2 streams through one transport, which\n"
      "                           serialises framing on each side)\n"
      "  --duration S             measured seconds, (0, %.0f] (default 10)\n"
      "  --requests N             measured passes instead, 1..%lld (stops anyway after %.0f s)\n"
      "  --warmup S               seconds of passes before measuring, [0, %.0f] (default 1)\n"
      "  --seed N                 seed of the synthetic attention (default 1)\n"
      "  --max-message-bytes N    split layers by heads above this size (default 4 MiB)\n"
      "  --client-fusion off|auto|on  fuse each layer's heads on the client and send one\n"
      "                           (mean fusion; not with grad-rollout): default off, every\n"
      "                           head is sent\n"
      "  --json                   print one JSON object instead of the text report\n"
      "  --monitor-model M        tag every pass as traffic of model M (live monitoring)\n"
      "  --monitor-sample K       ... folded 1 in K (default every pass)\n"
      "  --monitor-only           ... sent for monitoring only (no maps come back)\n\n"
      "Each pass has a deadline of min(--timeout, duration + %.0f s) (--requests: --timeout).\n"
      "A pass whose attention and one fp32 layer (--rpc arrays: and its fp32 arrays) exceed\n"
      "4 GiB of client memory is refused.\n\n"
      "Report: passes/s (every pass, any status), attention MB/s sent (wire bytes of the\n"
      "attention and gradient written, MB = 10^6 bytes), latency percentiles of the passes\n"
      "that succeeded (first write to response; --rpc arrays: the call, fusion and encoding\n"
      "included; nearest rank), and the count of every status\n"
      "code. JSON keys: server, server_version, shape [B, L, H, n], wire, method, rows, rpc,\n"
      "concurrency, channels, warmup_seconds, duration_seconds (null with --requests),\n"
      "requests (null with --duration), seed, pass_timeout_seconds, heads_fused_on_client\n"
      "(one head per layer sent), bytes_per_pass, messages_per_pass, warmup_passes,\n"
      "passes (attempted in the measured phase), ok_passes, elapsed_seconds (start of the\n"
      "measured phase to the last completion), passes_per_second (passes / elapsed),\n"
      "ok_passes_per_second, bytes_sent,\n"
      "mb_per_second (bytes_sent / elapsed / 10^6), latency_ms {p50, p90, p99, max, mean}\n"
      "(null without a successful pass), status {CODE: count} (sums to passes), stopped\n"
      "(\"duration\", \"requests\" or \"time_cap\"), lb_policy and attempts (the global --lb and\n"
      "--attempts as applied), resent (sends beyond each pass's first: passes sent again\n"
      "whole after UNAVAILABLE; retries gRPC made inside a call are not seen), peers\n"
      "{SERVER: {CODE: count}} (each pass by the server its last send reached, as gRPC\n"
      "names it, e.g. \"ipv4:127.0.0.1:50051\"; not with --rpc stream), errors {CODE:\n"
      "{message, at_seconds}} (the first failed pass of each code: its status message and\n"
      "when it ended, seconds from the start of the measured phase).\n\n"
      "Exit: 0 when the run completed (errors are counted, not fatal), 1 when the server\n"
      "could not be reached (GetServerInfo, with a 10 s deadline, failed), 2 on bad usage.\n",
      kMaxConcurrency, kDefaultMaxChannels, kMaxDurationSeconds,
      static_cast<long long>(kMaxRequests), kMaxDurationSeconds, kMaxWarmupSeconds,
      kDeadlineSlackSeconds);
}

struct BenchConfig {
  int64_t batch = 1, layers = 0, heads = 0, tokens = 0;
  v1::DType wire = v1::DTYPE_FP32;
  std::string wire_name = "fp32";
  std::string method = "rollout";
  std::vector<uint32_t> rows = {0};
  std::string rpc = "explain";
  int concurrency = 1;
  int channels = 0;
  double duration = 10;   // measured seconds (duration mode)
  int64_t requests = 0;   // measured passes (requests mode), 0 = duration mode
  double warmup = 1;
  uint64_t seed = 1;
  int64_t max_message_bytes = int64_t{4} << 20;
  // Off by default: a load test sends every head unless told otherwise.
  client::ClientFusion client_fusion = client::ClientFusion::kOff;
  bool json = false;
  // A monitor tag on every pass (live monitoring load).
  std::string monitor_model;
  uint32_t monitor_sample = 0;
  bool monitor_only = false;
};

// A whole number in [lo, hi].
template <typename T>
bool ParseCount(const std::string& s, T lo, T hi, T* out) {
  return absl::SimpleAtoi(s, out) && *out >= lo && *out <= hi;
}

// Every option into *c; "" or the usage message of the bad one.
std::string ParseBenchConfig(std::map<std::string, std::string>& opt, BenchConfig* c) {
  if (!opt.count("shape")) return "--shape L,H,n is required";
  {
    std::vector<std::string> parts = absl::StrSplit(opt["shape"], ',');
    int64_t v[3];
    if (parts.size() != 3 || !ParseCount<int64_t>(parts[0], 1, 1 << 20, &v[0]) ||
        !ParseCount<int64_t>(parts[1], 1, 1 << 20, &v[1]) ||
        !ParseCount<int64_t>(parts[2], 1, 1 << 20, &v[2])) {
      return "--shape: expected L,H,n (three counts >= 1), got '" + opt["shape"] + "'";
    }
    c->layers = v[0];
    c->heads = v[1];
    c->tokens = v[2];
  }
  if (opt.count("batch") && !ParseCount<int64_t>(opt["batch"], 1, 1 << 20, &c->batch)) {
    return "--batch: expected a count >= 1, got '" + opt["batch"] + "'";
  }
  if (opt.count("wire")) {
    static const std::map<std::string, v1::DType> kWire = {
        {"fp32", v1::DTYPE_FP32}, {"fp16", v1::DTYPE_FP16}, {"bf16", v1::DTYPE_BF16}};
    auto it = kWire.find(opt["wire"]);
    if (it == kWire.end()) return "--wire: expected fp32|fp16|bf16, got '" + opt["wire"] + "'";
    c->wire = it->second;
    c->wire_name = it->first;
  }
  if (std::string bad = ParseClientFusion(opt, &c->client_fusion); !bad.empty()) return bad;
  if (opt.count("method")) {
    c->method = opt["method"];
    if (c->method != "rollout" && c->method != "grad-rollout" && c->method != "flow" &&
        c->method != "null") {
      return "--method: expected rollout|grad-rollout|flow|null, got '" + c->method + "'";
    }
  }
  if (opt.count("rows")) {
    if (c->method == "null") return "--rows is not used with --method null";
    c->rows.clear();
    for (absl::string_view part : absl::StrSplit(opt["rows"], ',')) {
      uint32_t r;
      if (!absl::SimpleAtoi(part, &r) || int64_t{r} >= c->tokens) {
        return absl::StrCat("--rows: expected rows I,J,... below n = ", c->tokens, ", got '",
                            opt["rows"], "'");
      }
      c->rows.push_back(r);
    }
  }
  if (c->method == "null") c->rows.clear();
  if (c->client_fusion == client::ClientFusion::kOn && c->method == "grad-rollout") {
    return "--client-fusion on: grad-rollout needs every head (its rule weights each one)";
  }
  if (opt.count("rpc")) {
    c->rpc = opt["rpc"];
    if (c->rpc != "explain" && c->rpc != "stream" && c->rpc != "arrays") {
      return "--rpc: expected explain|stream|arrays, got '" + c->rpc + "'";
    }
  }
  if (opt.count("concurrency") &&
      !ParseCount<int>(opt["concurrency"], 1, kMaxConcurrency, &c->concurrency)) {
    return absl::StrCat("--concurrency: expected 1..", kMaxConcurrency, ", got '",
                        opt["concurrency"], "'");
  }
  c->channels = std::min(c->concurrency, kDefaultMaxChannels);
  if (opt.count("channels") && !ParseCount<int>(opt["channels"], 1, c->concurrency, &c->channels)) {
    return absl::StrCat("--channels: expected 1..", c->concurrency, " (at most --concurrency), got '",
                        opt["channels"], "'");
  }
  if (opt.count("duration") && opt.count("requests")) {
    return "--duration and --requests are exclusive";
  }
  if (opt.count("duration") &&
      (!absl::SimpleAtod(opt["duration"], &c->duration) || !(c->duration > 0) ||
       c->duration > kMaxDurationSeconds)) {
    return absl::StrFormat("--duration: expected seconds in (0, %.0f], got '%s'",
                           kMaxDurationSeconds, opt["duration"]);
  }
  if (opt.count("requests") &&
      !ParseCount<int64_t>(opt["requests"], 1, kMaxRequests, &c->requests)) {
    return absl::StrCat("--requests: expected 1..", kMaxRequests, ", got '", opt["requests"], "'");
  }
  if (opt.count("warmup") &&
      (!absl::SimpleAtod(opt["warmup"], &c->warmup) || !(c->warmup >= 0) ||
       c->warmup > kMaxWarmupSeconds)) {
    return absl::StrFormat("--warmup: expected seconds in [0, %.0f], got '%s'", kMaxWarmupSeconds,
                           opt["warmup"]);
  }
  if (opt.count("seed") && !absl::SimpleAtoi(opt["seed"], &c->seed)) {
    return "--seed: expected a whole number >= 0, got '" + opt["seed"] + "'";
  }
  if (opt.count("max-message-bytes") &&
      !ParseCount<int64_t>(opt["max-message-bytes"], 1, int64_t{1} << 40, &c->max_message_bytes)) {
    return "--max-message-bytes: expected a positive count, got '" + opt["max-message-bytes"] + "'";
  }
  c->json = opt.count("json") > 0;
  if (opt.count("monitor-model")) c->monitor_model = opt["monitor-model"];
  if (opt.count("monitor-sample") && !absl::SimpleAtoi(opt["monitor-sample"], &c->monitor_sample)) {
    return "--monitor-sample: expected a count K (1 in K passes), got '" + opt["monitor-sample"] + "'";
  }
  c->monitor_only = opt.count("monitor-only") > 0;
  if (c->monitor_model.empty() && (opt.count("monitor-sample") || c->monitor_only)) {
    return "--monitor-sample and --monitor-only need --monitor-model";
  }

  const double grad = c->method == "grad-rollout" ? 2 : 1;
  const double elems = static_cast<double>(c->batch) * c->heads * c->tokens * c->tokens;
  const double arrays = c->rpc == "arrays" ? elems * c->layers * 4 * grad : 0;
  const double bytes =
      elems * c->layers * client::WireSize(c->wire) * grad + elems * 4 * grad + arrays;
  if (bytes > kMaxClientBytes) {
    return absl::StrFormat(
        "the pass needs %.2f GiB of client memory (its wire bytes and one fp32 layer%s), over "
        "the bench's 4 GiB",
        bytes / (int64_t{1} << 30), arrays > 0 ? ", and every fp32 layer for --rpc arrays" : "");
  }
  return "";
}

// splitmix64: a small, fast, deterministic generator.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1].
  double Uniform() { return (static_cast<double>(Next() >> 11) + 1.0) * 0x1.0p-53; }
  // Two independent N(0, 1) (Box-Muller).
  void Normals(float* a, float* b) {
    const double r = std::sqrt(-2.0 * std::log(Uniform())), t = 6.283185307179586 * Uniform();
    *a = static_cast<float>(r * std::cos(t));
    *b = static_cast<float>(r * std::sin(t));
  }

 private:
  uint64_t state_;
};

void FillNormals(Rng& rng, float* out, int64_t count) {
  int64_t i = 0;
  for (; i + 1 < count; i += 2) rng.Normals(&out[i], &out[i + 1]);
  if (i < count) {
    float spare;
    rng.Normals(&out[i], &spare);
  }
}

// The header of the synthetic pass (every head; MakePass marks the heads
// fused when it fuses them).
v1::PassHeader BenchHeader(const BenchConfig& c) {
  v1::PassHeader header;
  header.set_request_id("bench");
  if (!c.monitor_model.empty()) {
    header.mutable_monitor()->set_model(c.monitor_model);
    header.mutable_monitor()->set_sample_one_in(c.monitor_sample);
    header.mutable_monitor()->set_monitor_only(c.monitor_only);
  }
  v1::Layout* layout = header.mutable_layout();
  layout->set_num_layers(static_cast<uint32_t>(c.layers));
  layout->set_num_heads(static_cast<uint32_t>(c.heads));
  layout->set_num_tokens(static_cast<uint32_t>(c.tokens));
  layout->set_batch_size(static_cast<uint32_t>(c.batch));
  v1::Analysis* analysis = header.add_analyses();
  if (c.method == "null") {
    analysis->mutable_validate();
  } else if (c.method == "flow") {
    for (uint32_t r : c.rows) analysis->mutable_flow()->mutable_readout()->add_rows(r);
  } else {
    v1::RolloutOptions* ro = analysis->mutable_rollout();
    for (uint32_t r : c.rows) ro->mutable_readout()->add_rows(r);
    if (c.method == "grad-rollout") ro->mutable_gradient();
  }
  return header;
}

// Layer l of the synthetic pass, [B, 1, H, n, n]: row softmaxes of N(0, 1)
// logits and, when `gradient` is not empty, N(0, 1) gradients. One generator
// per layer, so a layer does not depend on the others.
void SyntheticLayer(const BenchConfig& c, int64_t l, std::vector<float>& attention,
                    std::vector<float>& gradient) {
  const int64_t n = c.tokens, rows = static_cast<int64_t>(attention.size()) / n;
  Rng rng(c.seed * 0x100000001B3ull + static_cast<uint64_t>(l));
  FillNormals(rng, attention.data(), static_cast<int64_t>(attention.size()));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = attention.data() + r * n;
    const float top = *std::max_element(row, row + n);
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += (row[j] = std::exp(row[j] - top));
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  }
  if (!gradient.empty()) FillNormals(rng, gradient.data(), static_cast<int64_t>(gradient.size()));
}

// The synthetic pass, layer by layer, each layer encoded to the wire at once,
// so only one fp32 layer is held at a time.
client::PreparedPass MakePass(const BenchConfig& c) {
  v1::PassHeader header = BenchHeader(c);
  // Heads fused on the client: the weights (all 1: mean) when the pass allows it.
  std::vector<float> fusion_weights;
  if (c.client_fusion != client::ClientFusion::kOff &&
      (c.heads > 1 || c.client_fusion == client::ClientFusion::kOn)) {
    if (absl::StatusOr<std::vector<float>> w = v1::ClientFusionWeights(header); w.ok()) {
      fusion_weights = *std::move(w);
      header.mutable_layout()->set_heads_fused_by_client(true);
    }
  }

  const bool grad = c.method == "grad-rollout";
  const int64_t n = c.tokens;
  std::vector<float> attention(static_cast<size_t>(c.batch * c.heads * n * n)), gradient;
  if (grad) gradient.resize(attention.size());
  std::vector<v1::LayerChunk> chunks;
  for (int64_t l = 0; l < c.layers; ++l) {
    SyntheticLayer(c, l, attention, gradient);
    client::AttentionView view;
    view.data = attention.data();
    view.gradient = grad ? gradient.data() : nullptr;
    view.batch = c.batch;
    view.layers = 1;
    view.heads = c.heads;
    view.tokens = n;
    client::FusedAttention fused;
    if (!fusion_weights.empty()) fused = *client::FuseHeads(view, fusion_weights);
    for (v1::LayerChunk& chunk : client::LayerChunks(fusion_weights.empty() ? view : fused.view, 0,
                                                     c.wire, c.max_message_bytes)) {
      chunk.set_layer(static_cast<uint32_t>(l));
      chunks.push_back(std::move(chunk));
    }
  }
  return client::PreparedPass(std::move(header), std::move(chunks));
}

// The same synthetic pass as float32 arrays [B, L, H, n, n] in memory, for
// --rpc arrays.
struct BenchArrays {
  v1::PassHeader header;
  std::vector<float> attention, gradient;
  client::AttentionView view;
};

std::unique_ptr<BenchArrays> MakeArrays(const BenchConfig& c) {
  auto arrays = std::make_unique<BenchArrays>();
  arrays->header = BenchHeader(c);
  const bool grad = c.method == "grad-rollout";
  const int64_t n = c.tokens, head_block = c.heads * n * n;
  std::vector<float> layer(static_cast<size_t>(c.batch * head_block)), layer_gradient;
  if (grad) layer_gradient.resize(layer.size());
  arrays->attention.resize(static_cast<size_t>(c.batch * c.layers * head_block));
  if (grad) arrays->gradient.resize(arrays->attention.size());
  for (int64_t l = 0; l < c.layers; ++l) {
    SyntheticLayer(c, l, layer, layer_gradient);
    for (int64_t b = 0; b < c.batch; ++b) {
      const size_t from = static_cast<size_t>(b * head_block);
      const size_t to = static_cast<size_t>((b * c.layers + l) * head_block);
      std::copy_n(layer.begin() + from, head_block, arrays->attention.begin() + to);
      if (grad) std::copy_n(layer_gradient.begin() + from, head_block, arrays->gradient.begin() + to);
    }
  }
  client::AttentionView& view = arrays->view;
  view.data = arrays->attention.data();
  view.gradient = grad ? arrays->gradient.data() : nullptr;
  view.batch = c.batch;
  view.layers = c.layers;
  view.heads = c.heads;
  view.tokens = n;
  return arrays;
}

// One pass's outcome.
struct Outcome {
  absl::StatusCode code = absl::StatusCode::kOk;
  double seconds = 0;
  int64_t bytes = 0;
  // Sends of the pass (more than 1: re-sent after UNAVAILABLE) and the
  // server the last one reached (Explain calls; empty on streams).
  int sends = 1;
  std::string peer;
  // The status message of a pass that failed.
  std::string message;
  // Messages of every send of the pass (--rpc arrays, whose client packs
  // fused layers into batches; 0 otherwise: the prepared pass's count is known).
  int messages = 0;
};

// Sends one pass at a time for one client thread.
class Sender {
 public:
  virtual ~Sender() = default;
  virtual Outcome Send() = 0;
};

// One Explain call per pass.
class ExplainSender : public Sender {
 public:
  ExplainSender(client::Client* client, const client::PreparedPass* pass, absl::Duration timeout)
      : client_(client), pass_(pass), timeout_(timeout) {}
  Outcome Send() override {
    client::CallStats stats;
    absl::StatusOr<v1::ExplainResponse> r = client_->Explain(*pass_, timeout_, &stats);
    return {r.status().code(), stats.seconds, stats.bytes_sent, stats.sends, stats.peer,
            std::string(r.status().message())};
  }

 private:
  client::Client* client_;
  const client::PreparedPass* pass_;
  absl::Duration timeout_;
};

// One Explain call per pass from the arrays in memory: the head fusion and
// the encoding are inside the timed call (the pass's seconds run from the
// call to its return).
class ArraysSender : public Sender {
 public:
  ArraysSender(client::Client* client, const BenchArrays* arrays, client::ExplainOptions options)
      : client_(client), arrays_(arrays), options_(std::move(options)) {}
  Outcome Send() override {
    client::CallStats stats;
    const absl::Time start = absl::Now();
    absl::StatusOr<v1::ExplainResponse> r =
        client_->Explain(arrays_->header, arrays_->view, options_, &stats);
    return {r.status().code(), absl::ToDoubleSeconds(absl::Now() - start), stats.bytes_sent,
            stats.sends, stats.peer, std::string(r.status().message()), stats.messages_sent};
  }

 private:
  client::Client* client_;
  const BenchArrays* arrays_;
  client::ExplainOptions options_;
};

// One ExplainStream for the thread's whole run, one pass open at a time; a
// stream that ends (a call error, or a pass past its deadline, which cancels
// it) is replaced by a new one for the next pass.
class StreamSender : public Sender {
 public:
  StreamSender(client::Client* client, const client::PreparedPass* pass, absl::Duration timeout,
               absl::Duration stream_timeout)
      : client_(client), pass_(pass), timeout_(timeout), stream_timeout_(stream_timeout) {}
  ~StreamSender() override {
    if (stream_ != nullptr) stream_->Finish().IgnoreError();
  }

  Outcome Send() override {
    if (stream_ == nullptr) Open();
    const std::string id = absl::StrCat("p", next_id_++);
    {
      std::lock_guard<std::mutex> lock(mu_);
      waiting_for_ = id;
      result_.reset();
    }
    const absl::Time start = absl::Now();
    client::CallStats stats;
    const absl::Status sent = stream_->AddPass(id, *pass_, &stats);
    Outcome out;
    out.bytes = stats.bytes_sent;
    if (!sent.ok()) {
      // The call has ended: its status is the pass's.
      const absl::Status ended = EndStream();
      out.code = ended.ok() ? absl::StatusCode::kUnknown : ended.code();
      out.message = ended.ok() ? "the stream ended OK while a pass was being sent"
                               : std::string(ended.message());
      out.seconds = absl::ToDoubleSeconds(absl::Now() - start);
      return out;
    }
    std::unique_lock<std::mutex> lock(mu_);
    const bool answered = cv_.wait_until(lock, absl::ToChronoTime(start + timeout_),
                                         [&] { return result_.has_value() || done_; });
    out.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (result_.has_value()) {
      // A result after the pass's deadline fails it, as on Explain (the
      // writes may have outlasted it before the wait began).
      out.seconds = absl::ToDoubleSeconds(result_time_ - start);
      out.code = result_time_ - start > timeout_ ? absl::StatusCode::kDeadlineExceeded : *result_;
      if (out.code == absl::StatusCode::kDeadlineExceeded && *result_ != out.code) {
        out.message = "the result came after the pass's deadline";
      } else {
        out.message = result_message_;
      }
      return out;
    }
    lock.unlock();
    if (!answered) stream_->Cancel();
    const absl::Status ended = EndStream();
    out.code = !answered   ? absl::StatusCode::kDeadlineExceeded
               : !ended.ok() ? ended.code()
                             : absl::StatusCode::kUnknown;
    out.message = !answered   ? "no result within the pass's deadline"
                  : !ended.ok() ? std::string(ended.message())
                                : "the stream ended OK without the pass's result";
    return out;
  }

 private:
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = false;
    }
    client::PassStreamOptions options;
    options.timeout = stream_timeout_;
    options.on_result = [this](const std::string& id, absl::StatusOr<v1::ExplainResponse> r) {
      std::lock_guard<std::mutex> lock(mu_);
      if (id != waiting_for_) return;
      result_ = r.status().code();
      result_message_ = std::string(r.status().message());
      result_time_ = absl::Now();
      cv_.notify_all();
    };
    options.on_done = [this] {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      cv_.notify_all();
    };
    stream_ = client_->ExplainStream(std::move(options));
  }
  absl::Status EndStream() {
    const absl::Status status = stream_->Finish();
    stream_.reset();
    return status;
  }

  client::Client* client_;
  const client::PreparedPass* pass_;
  absl::Duration timeout_, stream_timeout_;
  std::unique_ptr<client::PassStream> stream_;
  int64_t next_id_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string waiting_for_;
  std::optional<absl::StatusCode> result_;
  std::string result_message_;
  absl::Time result_time_;
  bool done_ = false;
};

// What one thread saw in one phase.
struct ThreadTally {
  int64_t passes = 0, bytes = 0;
  // Sends beyond each pass's first (re-sends after UNAVAILABLE).
  int64_t resent = 0;
  std::vector<double> ok_ms;
  std::map<absl::StatusCode, int64_t> codes;
  // The first message of each code other than OK, with the seconds from the
  // phase's start to that pass's end.
  std::map<absl::StatusCode, std::pair<std::string, double>> first_error;
  // Each pass's status by the server its last send reached.
  std::map<std::string, std::map<absl::StatusCode, int64_t>> peers;
  absl::Time last_done = absl::InfinitePast();
  // Messages of a pass that succeeded at its first send (--rpc arrays; 0 if none).
  int messages = 0;
};

// Runs every sender, one thread each, until `end`, or until `tickets`
// (when given) has handed out `max_tickets` passes.
std::vector<ThreadTally> RunPhase(std::vector<std::unique_ptr<Sender>>& senders, absl::Time end,
                                  std::atomic<int64_t>* tickets, int64_t max_tickets) {
  std::vector<ThreadTally> tallies(senders.size());
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < senders.size(); ++i) {
    threads.emplace_back([&, i] {
      ThreadTally& t = tallies[i];
      while (absl::Now() < end) {
        if (tickets != nullptr && tickets->fetch_add(1) >= max_tickets) break;
        const Outcome o = senders[i]->Send();
        t.last_done = absl::Now();
        ++t.passes;
        t.bytes += o.bytes;
        ++t.codes[o.code];
        t.resent += o.sends - 1;
        if (!o.peer.empty()) ++t.peers[o.peer][o.code];
        if (o.code == absl::StatusCode::kOk) {
          t.ok_ms.push_back(o.seconds * 1e3);
          if (o.sends == 1 && o.messages > 0) t.messages = o.messages;
        } else if (!t.first_error.count(o.code)) {
          t.first_error[o.code] = {o.message, absl::ToDoubleSeconds(t.last_done - start)};
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return tallies;
}

// A channel of its own: its own TCP connection (gRPC shares a connection
// between channels of the same target and arguments unless the subchannel
// pool is local), any message size.
absl::StatusOr<std::unique_ptr<client::Client>> ConnectChannel(const GlobalOptions& global, int index) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  // Layers of attention are megabytes: large HTTP/2 frames and write buffers.
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
  args.SetMaxSendMessageSize(-1);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("attnroll.bench_channel", index);
  return ConnectClient(global, args);
}

// Nearest rank: the smallest value with at least q of the values <= it.
double Quantile(const std::vector<double>& sorted, double q) {
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

std::string JsonNumber(double v) { return absl::StrFormat("%.9g", v); }

}  // namespace

int RunBench(const GlobalOptions& global, const std::vector<std::string>& args) {
  static const std::set<std::string> kValued = {
      "client-fusion", "shape", "batch", "wire", "concurrency", "channels", "duration",
      "requests", "method", "rows", "rpc", "warmup", "seed", "max-message-bytes",
      "monitor-model", "monitor-sample"};
  static const std::set<std::string> kFlags = {"json", "monitor-only"};
  std::map<std::string, std::string> opt;
  if (const std::string parsed = ParseOptions(args, kValued, kFlags, &opt); parsed == "help") {
    PrintBenchUsage();
    return 0;
  } else if (!parsed.empty()) {
    return Usage(parsed);
  }
  BenchConfig c;
  if (const std::string bad = ParseBenchConfig(opt, &c); !bad.empty()) return Usage(bad);

  // Reachable at all? (Also the server's version for the report.)
  std::vector<std::unique_ptr<client::Client>> channels;
  for (int k = 0; k < c.channels; ++k) {
    absl::StatusOr<std::unique_ptr<client::Client>> channel = ConnectChannel(global, k);
    if (!channel.ok()) return Fail(channel.status());
    channels.push_back(*std::move(channel));
  }
  // Its own deadline: --timeout is the passes' (and may be set very short).
  absl::StatusOr<v1::ServerInfo> info = channels[0]->GetServerInfo(absl::Seconds(kInfoTimeoutSeconds));
  if (!info.ok()) {
    std::fprintf(stderr, "attnroll bench: cannot reach the server at %s\n", global.server.c_str());
    return Fail(info.status());
  }

  const client::PreparedPass pass = MakePass(c);
  const std::unique_ptr<BenchArrays> arrays = c.rpc == "arrays" ? MakeArrays(c) : nullptr;
  const bool by_count = c.requests > 0;
  const double pass_timeout =
      by_count ? global.timeout_seconds
               : std::min(global.timeout_seconds, c.duration + kDeadlineSlackSeconds);
  const double measured_cap = by_count ? kMaxDurationSeconds : c.duration;
  const absl::Duration stream_timeout =
      absl::Seconds(c.warmup + measured_cap + pass_timeout + kDeadlineSlackSeconds);
  std::vector<std::unique_ptr<Sender>> senders;
  for (int i = 0; i < c.concurrency; ++i) {
    client::Client* client = channels[i % c.channels].get();
    if (c.rpc == "stream") {
      senders.push_back(std::make_unique<StreamSender>(client, &pass, absl::Seconds(pass_timeout),
                                                       stream_timeout));
    } else if (c.rpc == "arrays") {
      client::ExplainOptions options;
      options.wire = c.wire;
      options.client_fusion = c.client_fusion;
      options.max_message_bytes = c.max_message_bytes;
      options.timeout = absl::Seconds(pass_timeout);
      senders.push_back(std::make_unique<ArraysSender>(client, arrays.get(), std::move(options)));
    } else {
      senders.push_back(std::make_unique<ExplainSender>(client, &pass, absl::Seconds(pass_timeout)));
    }
  }

  int64_t warmup_passes = 0;
  if (c.warmup > 0) {
    for (const ThreadTally& t : RunPhase(senders, absl::Now() + absl::Seconds(c.warmup), nullptr, 0)) {
      warmup_passes += t.passes;
    }
  }
  std::atomic<int64_t> tickets{0};
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(measured_cap);
  std::vector<ThreadTally> tallies =
      RunPhase(senders, end, by_count ? &tickets : nullptr, c.requests);
  senders.clear();  // ends the streams

  ThreadTally all;
  for (ThreadTally& t : tallies) {
    all.passes += t.passes;
    all.bytes += t.bytes;
    all.resent += t.resent;
    for (const auto& [peer, codes] : t.peers) {
      for (const auto& [code, count] : codes) all.peers[peer][code] += count;
    }
    all.ok_ms.insert(all.ok_ms.end(), t.ok_ms.begin(), t.ok_ms.end());
    for (const auto& [code, count] : t.codes) all.codes[code] += count;
    for (const auto& [code, first] : t.first_error) {
      auto it = all.first_error.find(code);
      if (it == all.first_error.end() || first.second < it->second.second) {
        all.first_error[code] = first;
      }
    }
    all.last_done = std::max(all.last_done, t.last_done);
    all.messages = std::max(all.messages, t.messages);
  }
  // What a pass sent: the prepared pass's messages, or the ones an arrays
  // pass was seen to send (its client batches fused layers).
  const int messages_per_pass = all.messages > 0 ? all.messages : pass.messages();
  const double elapsed =
      std::max(1e-9, absl::ToDoubleSeconds((all.passes > 0 ? all.last_done : absl::Now()) - start));
  std::sort(all.ok_ms.begin(), all.ok_ms.end());
  const int64_t ok = static_cast<int64_t>(all.ok_ms.size());
  const std::string stopped = !by_count                ? "duration"
                              : all.passes >= c.requests ? "requests"
                                                         : "time_cap";
  if (stopped == "time_cap") {
    std::fprintf(stderr, "attnroll bench: stopped after %.0f s with %lld of %lld passes\n",
                 kMaxDurationSeconds, static_cast<long long>(all.passes),
                 static_cast<long long>(c.requests));
  }
  const double mb_per_s = static_cast<double>(all.bytes) / elapsed / 1e6;
  double mean = 0;
  for (double v : all.ok_ms) mean += v;
  if (ok > 0) mean /= static_cast<double>(ok);
  std::vector<std::pair<std::string, int64_t>> codes;
  for (const auto& [code, count] : all.codes) codes.emplace_back(absl::StatusCodeToString(code), count);
  auto code_counts = [](const std::map<absl::StatusCode, int64_t>& counts, const char* sep,
                        bool json) {
    return absl::StrJoin(counts, ", ", [&](std::string* out, const auto& p) {
      const std::string name = absl::StatusCodeToString(p.first);
      absl::StrAppend(out, json ? JsonString(name) : name, sep, p.second);
    });
  };
  const client::LbPolicy lb = client::EffectiveLbPolicy(global.server, global.connect.lb);
  const int attempts = client::EffectiveAttempts(global.server, global.connect);

  if (c.json) {
    const std::string latency =
        ok == 0 ? "{\"p50\": null, \"p90\": null, \"p99\": null, \"max\": null, \"mean\": null}"
                : absl::StrCat("{\"p50\": ", JsonNumber(Quantile(all.ok_ms, 0.50)),
                               ", \"p90\": ", JsonNumber(Quantile(all.ok_ms, 0.90)),
                               ", \"p99\": ", JsonNumber(Quantile(all.ok_ms, 0.99)),
                               ", \"max\": ", JsonNumber(all.ok_ms.back()),
                               ", \"mean\": ", JsonNumber(mean), "}");
    absl::PrintF(
        "{\"server\": %s, \"server_version\": %s, \"shape\": [%lld, %lld, %lld, %lld], "
        "\"wire\": \"%s\", \"heads_fused_on_client\": %s, \"method\": \"%s\", \"rows\": [%s], "
        "\"rpc\": \"%s\", "
        "\"concurrency\": %d, \"channels\": %d, \"warmup_seconds\": %s, "
        "\"duration_seconds\": %s, \"requests\": %s, \"seed\": %llu, "
        "\"pass_timeout_seconds\": %s, \"bytes_per_pass\": %lld, \"messages_per_pass\": %d, "
        "\"warmup_passes\": %lld, \"passes\": %lld, \"ok_passes\": %lld, "
        "\"elapsed_seconds\": %s, \"passes_per_second\": %s, \"ok_passes_per_second\": %s, "
        "\"bytes_sent\": %lld, \"mb_per_second\": %s, \"latency_ms\": %s, \"status\": {%s}, "
        "\"lb_policy\": \"%s\", \"attempts\": %d, \"resent\": %lld, \"peers\": {%s}, "
        "\"errors\": {%s}, \"stopped\": \"%s\"}\n",
        JsonString(global.server), JsonString(info->version()), static_cast<long long>(c.batch),
        static_cast<long long>(c.layers), static_cast<long long>(c.heads),
        static_cast<long long>(c.tokens), c.wire_name,
        pass.header().layout().heads_fused_by_client() ? "true" : "false", c.method,
        absl::StrJoin(c.rows, ", "),
        c.rpc, c.concurrency, c.channels, JsonNumber(c.warmup),
        by_count ? "null" : JsonNumber(c.duration),
        by_count ? std::to_string(c.requests) : "null", static_cast<unsigned long long>(c.seed),
        JsonNumber(pass_timeout), static_cast<long long>(pass.tensor_bytes()), messages_per_pass,
        static_cast<long long>(warmup_passes), static_cast<long long>(all.passes),
        static_cast<long long>(ok), JsonNumber(elapsed),
        JsonNumber(static_cast<double>(all.passes) / elapsed),
        JsonNumber(static_cast<double>(ok) / elapsed), static_cast<long long>(all.bytes),
        JsonNumber(mb_per_s), latency,
        absl::StrJoin(codes, ", ",
                      [](std::string* out, const std::pair<std::string, int64_t>& p) {
                        absl::StrAppend(out, JsonString(p.first), ": ", p.second);
                      }),
        client::LbPolicyName(lb), attempts, static_cast<long long>(all.resent),
        absl::StrJoin(all.peers, ", ",
                      [&](std::string* out, const auto& p) {
                        absl::StrAppend(out, JsonString(p.first), ": {",
                                        code_counts(p.second, ": ", true), "}");
                      }),
        absl::StrJoin(all.first_error, ", ",
                      [](std::string* out, const auto& p) {
                        absl::StrAppend(out, JsonString(absl::StatusCodeToString(p.first)),
                                        ": {\"message\": ", JsonString(p.second.first),
                                        ", \"at_seconds\": ", JsonNumber(p.second.second), "}");
                      }),
        stopped);
    return 0;
  }

  std::printf(
      "server   %s at %s\n"
      "config   shape B=%lld L=%lld H=%lld n=%lld, %s wire, %.3f MB in %d messages per pass; "
      "method %s%s; rpc %s; concurrency %d over %d channel%s; warm-up %g s (%lld passes); %s\n",
      info->version().c_str(), global.server.c_str(), static_cast<long long>(c.batch),
      static_cast<long long>(c.layers), static_cast<long long>(c.heads),
      static_cast<long long>(c.tokens), c.wire_name.c_str(),
      static_cast<double>(pass.tensor_bytes()) / 1e6, messages_per_pass, c.method.c_str(),
      c.rows.empty() ? "" : absl::StrCat(" (rows ", absl::StrJoin(c.rows, ","), ")").c_str(),
      c.rpc.c_str(), c.concurrency, c.channels, c.channels == 1 ? "" : "s", c.warmup,
      static_cast<long long>(warmup_passes),
      by_count ? absl::StrCat(c.requests, " passes").c_str()
               : absl::StrFormat("%g s", c.duration).c_str());
  std::printf("passes   %lld in %.3f s: %.1f passes/s (%lld OK: %.1f/s)\n",
              static_cast<long long>(all.passes), elapsed,
              static_cast<double>(all.passes) / elapsed, static_cast<long long>(ok),
              static_cast<double>(ok) / elapsed);
  std::printf("sent     %.1f MB/s of attention (wire bytes, MB = 10^6 B)\n", mb_per_s);
  if (ok > 0) {
    std::printf("latency  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (OK passes)\n",
                Quantile(all.ok_ms, 0.50), Quantile(all.ok_ms, 0.90), Quantile(all.ok_ms, 0.99),
                all.ok_ms.back());
  } else {
    std::printf("latency  - (no pass succeeded)\n");
  }
  std::printf("status   %s\n",
              absl::StrJoin(codes, ", ",
                            [](std::string* out, const std::pair<std::string, int64_t>& p) {
                              absl::StrAppend(out, p.first, " ", p.second);
                            })
                  .c_str());
  std::printf("balance  %s, %d attempt%s per call; %lld pass%s re-sent after UNAVAILABLE\n",
              client::LbPolicyName(lb), attempts, attempts == 1 ? "" : "s",
              static_cast<long long>(all.resent), all.resent == 1 ? "" : "es");
  for (const auto& [code, first] : all.first_error) {
    std::printf("error    %s (first at %.3f s): %s\n", absl::StatusCodeToString(code).c_str(),
                first.second, first.first.c_str());
  }
  for (const auto& [peer, counts] : all.peers) {
    std::printf("replica  %s: %s\n", peer.c_str(), code_counts(counts, " ", false).c_str());
  }
  return 0;
}

}  // namespace attnroll::cli
