// `attnroll explain --encoder E.npy --decoder D.npy --cross X.npy`: relevance of
// encoder tokens for decoder tokens (encoder-decoder or CLIP-style models).
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/attention_input.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/npy/npy.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {
namespace {

int Usage(const std::string& message) { return UsageError("explain", message); }

// Reads one stack, in any form the CLI reads attention in (client/cli/
// attention_input.h): [L, H, rows, cols], 5-D with --layout, per-layer files.
absl::StatusOr<AttentionInput> ReadStack(const std::string& path, const char* what, InputLayout layout,
                                         bool square, client::AttentionView* view) {
  absl::StatusOr<AttentionInput> a = ReadAttentionInput(path, layout, what, square);
  if (!a.ok()) return a.status();
  view->data = a->values();
  view->batch = a->batch;
  view->layers = a->layers;
  view->heads = a->heads;
  view->query_tokens = square ? 0 : a->rows;
  view->tokens = a->cols;
  return a;
}

}  // namespace

int RunEncoderDecoderExplain(const GlobalOptions& global, std::map<std::string, std::string>& opt) {
  for (const char* need : {"encoder", "decoder", "cross", "out"}) {
    if (!opt.count(need)) return Usage(absl::StrCat("--", need, " is required for an encoder-decoder pass"));
  }
  for (const char* unused : {"attention", "gradient", "method", "per-layer", "residual-weights",
                             "value-norms", "valid-lengths", "discard-ratio", "threshold", "mass",
                             "top-k", "aggregate-out", "head-aggregate", "prune-placement",
                             "renorm-before-residual", "fail-on-degenerate"}) {
    if (opt.count(unused)) return Usage(absl::StrCat("--", unused, " is not used with --encoder/--decoder/--cross"));
  }
  const std::string composition = opt.count("composition") ? opt["composition"] : "rules";
  if (composition != "rules" && composition != "rollout") {
    return Usage("--composition: expected rules or rollout");
  }
  const bool rules = composition == "rules";
  InputLayout input_layout = InputLayout::kUnset;
  if (opt.count("layout") && !ParseInputLayout(opt["layout"], &input_layout)) {
    return Usage("--layout: expected blhnn or lbhnn");
  }
  client::EncoderDecoderView view;
  absl::StatusOr<AttentionInput> enc = ReadStack(opt["encoder"], "--encoder", input_layout, true, &view.encoder);
  if (!enc.ok()) return Fail(enc.status());
  absl::StatusOr<AttentionInput> dec = ReadStack(opt["decoder"], "--decoder", input_layout, true, &view.decoder);
  if (!dec.ok()) return Fail(dec.status());
  absl::StatusOr<AttentionInput> cross = ReadStack(opt["cross"], "--cross", input_layout, false, &view.cross);
  if (!cross.ok()) return Fail(cross.status());
  if (view.cross.rows() != view.decoder.tokens || view.cross.tokens != view.encoder.tokens ||
      view.cross.layers != view.decoder.layers || view.cross.heads != view.encoder.heads ||
      view.decoder.heads != view.encoder.heads || view.cross.batch != view.encoder.batch ||
      view.decoder.batch != view.encoder.batch) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--encoder/--decoder/--cross: expected one batch and head count, and cross-attention of "
        "L = decoder layers, rows = decoder tokens, cols = encoder tokens; read --encoder ",
        enc->summary, ", --decoder ", dec->summary, ", --cross ", cross->summary)));
  }
  Array grads[3];
  const char* grad_flags[3] = {"encoder-gradient", "decoder-gradient", "cross-gradient"};
  client::AttentionView* views[3] = {&view.encoder, &view.decoder, &view.cross};
  const AttentionInput* stacks[3] = {&*enc, &*dec, &*cross};
  for (int i = 0; i < 3; ++i) {
    if (rules != (opt.count(grad_flags[i]) > 0)) {
      return Usage(rules ? absl::StrCat("--composition rules needs --", grad_flags[i])
                         : absl::StrCat("--", grad_flags[i], " is only used with --composition rules"));
    }
    if (!rules) continue;
    absl::StatusOr<Array> g =
        ReadGradientInput(opt[grad_flags[i]], input_layout, absl::StrCat("--", grad_flags[i]), *stacks[i]);
    if (!g.ok()) return Fail(g.status());
    grads[i] = std::move(*g);
    views[i]->gradient = grads[i].values.data();
  }
  // Side inputs of each stack, in the stack's form: residual weights ({} or
  // {rows} per layer) of the self-attention stacks, value norms ({H, keys}
  // per layer) of every stack.
  Array side_inputs[5];
  const struct {
    const char* flag;
    int stack;
    bool residual;  // residual weights, else value norms
  } sides[5] = {{"encoder-residual-weights", 0, true},
                {"decoder-residual-weights", 1, true},
                {"encoder-value-norms", 0, false},
                {"decoder-value-norms", 1, false},
                {"cross-value-norms", 2, false}};
  for (int i = 0; i < 5; ++i) {
    if (!opt.count(sides[i].flag)) continue;
    client::AttentionView& v = *views[sides[i].stack];
    int matched = 0;
    absl::StatusOr<Array> a = ReadSideInput(
        opt[sides[i].flag], input_layout, absl::StrCat("--", sides[i].flag), *stacks[sides[i].stack],
        sides[i].residual ? std::vector<std::vector<int64_t>>{{}, {v.rows()}}
                          : std::vector<std::vector<int64_t>>{{v.heads, v.tokens}},
        &matched);
    if (!a.ok()) return Fail(a.status());
    side_inputs[i] = *std::move(a);
    if (sides[i].residual) {
      v.residual_weights = side_inputs[i].values.data();
      v.residual_per_token = matched == 1;
    } else {
      v.value_norms = side_inputs[i].values.data();
    }
  }

  v1::PassHeader header;
  header.set_request_id(opt.count("request-id") ? opt["request-id"] : "cli");
  v1::Layout* layout = header.mutable_layout();
  v1::EncoderDecoder* ed = layout->mutable_encoder_decoder();
  for (const auto& [flag, add] :
       {std::pair<const char*, void (v1::EncoderDecoder::*)(uint32_t)>{
            "encoder-valid-lengths", &v1::EncoderDecoder::add_encoder_valid_lengths},
        {"decoder-valid-lengths", &v1::EncoderDecoder::add_decoder_valid_lengths}}) {
    if (!opt.count(flag)) continue;
    for (absl::string_view part : absl::StrSplit(opt[flag], ',')) {
      uint32_t n;
      if (!absl::SimpleAtoi(part, &n)) return Usage(absl::StrCat("--", flag, ": expected N1,N2,..."));
      (ed->*add)(n);
    }
  }
  v1::EncoderDecoderOptions* o = header.add_analyses()->mutable_encoder_decoder();
  o->set_composition(rules ? v1::COMPOSITION_RULES : v1::COMPOSITION_ROLLOUT);
  o->set_return_encoder(opt.count("encoder-out") > 0);
  o->set_return_decoder(opt.count("decoder-out") > 0);
  if (opt.count("fusion")) {
    v1::HeadFusion fusion;
    if (!ParseFusion(opt["fusion"], /*allow_none=*/false, &fusion)) {
      return Usage("--fusion: expected mean|max|min|weighted");
    }
    o->set_fusion(fusion);
  }
  if (opt.count("head-weights")) {
    for (absl::string_view part : absl::StrSplit(opt["head-weights"], ',')) {
      float w;
      if (!absl::SimpleAtof(part, &w)) return Usage("--head-weights: bad number");
      o->add_head_weights(w);
    }
  }
  if (opt.count("residual")) {
    float a;
    if (!absl::SimpleAtof(opt["residual"], &a)) return Usage("--residual: expected a number");
    o->set_residual(a);
  }
  o->set_no_renormalize(opt.count("no-renorm") > 0);
  if (opt.count("rows")) {
    if (opt["rows"] == "mean") {
      o->mutable_readout()->set_mean_of_rows(true);
    } else if (opt["rows"] == "last") {
      o->mutable_readout()->set_last_row(true);
    } else if (opt["rows"] != "all") {
      for (absl::string_view part : absl::StrSplit(opt["rows"], ',')) {
        uint32_t r;
        if (!absl::SimpleAtoi(part, &r)) return Usage("--rows: expected I,J,...|mean|last|all");
        o->mutable_readout()->add_rows(r);
      }
    }
  }
  layout->set_causal(opt.count("causal") > 0);
  client::ExplainOptions options;
  options.timeout = absl::Seconds(global.timeout_seconds);
  if (std::string bad = ApplySharedExplainOptions(opt, o->mutable_readout(), layout, &options.wire);
      !bad.empty()) {
    return Usage(bad);
  }
  absl::StatusOr<std::unique_ptr<client::Client>> connected = ConnectClient(global);
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  client::CallStats stats;
  absl::StatusOr<v1::ExplainResponse> response =
      client->ExplainEncoderDecoder(header, view, options, &stats);
  if (!response.ok()) return Fail(response.status());
  const bool batched = enc->batched;
  const v1::AnalysisResult& r = response->results(0);
  absl::StatusOr<Array> out = AssembleMaps(r.maps(), batched);
  if (!out.ok()) return Fail(out.status());
  if (absl::Status st = WriteNpy(opt["out"], *out); !st.ok()) return Fail(st);
  const std::pair<const char*, const google::protobuf::RepeatedPtrField<v1::Tensor>*> extra[] = {
      {"encoder-out", &r.encoder_maps()}, {"decoder-out", &r.decoder_maps()}};
  for (const auto& [flag, maps] : extra) {
    if (!opt.count(flag)) continue;
    absl::StatusOr<Array> m = AssembleMaps(*maps, batched);
    if (!m.ok()) return Fail(m.status());
    if (absl::Status st = WriteNpy(opt[flag], *m); !st.ok()) return Fail(st);
  }
  if (opt.count("json")) {
    std::printf("{\"out\": %s, \"shape\": [%s], \"method\": \"encoder-decoder\", \"path\": %s, "
                "\"rows\": [%s], \"server_version\": %s, \"bytes_sent\": %lld, "
                "\"timing\": {\"client_seconds\": %.6f, \"server_compute_seconds\": %.6f}}\n",
                JsonString(opt["out"]).c_str(), absl::StrJoin(out->shape, ", ").c_str(),
                JsonString(r.path()).c_str(), absl::StrJoin(r.rows(), ", ").c_str(),
                JsonString(response->server_version()).c_str(),
                static_cast<long long>(stats.bytes_sent), stats.seconds,
                response->timing().compute_seconds());
  } else {
    std::printf("wrote %s: shape [%s] (decoder x encoder tokens, %s)\n", opt["out"].c_str(),
                absl::StrJoin(out->shape, ", ").c_str(), r.path().c_str());
  }
  return 0;
}

}  // namespace attnroll::cli
