// `attnroll explain --encoder E.npy --decoder D.npy --cross X.npy`: relevance of
// encoder tokens for decoder tokens (encoder-decoder or CLIP-style models).
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/npy/npy.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {
namespace {

int Usage(const std::string& message) { return UsageError("explain", message); }

// Reads one stack: [L, H, rows, cols] or [B, L, H, rows, cols].
absl::StatusOr<Array> ReadStack(const std::string& path, const char* name,
                                client::AttentionView* view) {
  absl::StatusOr<Array> a = ReadNpy(path);
  if (!a.ok()) return a.status();
  const auto& s = a->shape;
  if (s.size() != 4 && s.size() != 5) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected the ", name,
                                                   " as [L, H, rows, cols] or [B, L, H, rows, cols], got [",
                                                   absl::StrJoin(s, ", "), "]"));
  }
  const size_t o = s.size() - 4;
  view->data = a->values.data();
  view->batch = o == 1 ? s[0] : 1;
  view->layers = s[o];
  view->heads = s[o + 1];
  view->query_tokens = s[o + 2];
  view->tokens = s[o + 3];
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
  client::EncoderDecoderView view;
  absl::StatusOr<Array> enc = ReadStack(opt["encoder"], "encoder self-attention", &view.encoder);
  if (!enc.ok()) return Fail(enc.status());
  absl::StatusOr<Array> dec = ReadStack(opt["decoder"], "decoder self-attention", &view.decoder);
  if (!dec.ok()) return Fail(dec.status());
  absl::StatusOr<Array> cross = ReadStack(opt["cross"], "cross-attention", &view.cross);
  if (!cross.ok()) return Fail(cross.status());
  if (view.cross.rows() != view.decoder.tokens || view.cross.tokens != view.encoder.tokens ||
      view.cross.layers != view.decoder.layers) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        opt["cross"], ": expected [", view.decoder.layers, ", H, ", view.decoder.tokens, ", ",
        view.encoder.tokens, "] (decoder layers, decoder x encoder tokens), got [",
        absl::StrJoin(cross->shape, ", "), "]")));
  }
  view.encoder.query_tokens = view.decoder.query_tokens = 0;
  Array grads[3];
  const char* grad_flags[3] = {"encoder-gradient", "decoder-gradient", "cross-gradient"};
  client::AttentionView* views[3] = {&view.encoder, &view.decoder, &view.cross};
  const Array* arrays[3] = {&*enc, &*dec, &*cross};
  for (int i = 0; i < 3; ++i) {
    if (rules != (opt.count(grad_flags[i]) > 0)) {
      return Usage(rules ? absl::StrCat("--composition rules needs --", grad_flags[i])
                         : absl::StrCat("--", grad_flags[i], " is only used with --composition rules"));
    }
    if (!rules) continue;
    absl::StatusOr<Array> g = ReadNpy(opt[grad_flags[i]]);
    if (!g.ok()) return Fail(g.status());
    if (g->shape != arrays[i]->shape) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          opt[grad_flags[i]], ": expected the attention's shape [", absl::StrJoin(arrays[i]->shape, ", "),
          "], got [", absl::StrJoin(g->shape, ", "), "]")));
    }
    grads[i] = std::move(*g);
    views[i]->gradient = grads[i].values.data();
  }
  // Side inputs of each stack: residual weights ([L] or [L, n]) of the
  // self-attention stacks, value norms ([L, H, keys]) of every stack, with the
  // attention's leading B.
  Array side_inputs[5];
  const struct {
    const char* flag;
    client::AttentionView* view;
    bool residual;  // residual weights, else value norms
  } sides[5] = {{"encoder-residual-weights", &view.encoder, true},
                {"decoder-residual-weights", &view.decoder, true},
                {"encoder-value-norms", &view.encoder, false},
                {"decoder-value-norms", &view.decoder, false},
                {"cross-value-norms", &view.cross, false}};
  const bool batched_input = enc->shape.size() == 5;
  for (int i = 0; i < 5; ++i) {
    if (!opt.count(sides[i].flag)) continue;
    client::AttentionView& v = *sides[i].view;
    std::vector<std::vector<int64_t>> shapes =
        sides[i].residual ? std::vector<std::vector<int64_t>>{{v.layers}, {v.layers, v.rows()}}
                          : std::vector<std::vector<int64_t>>{{v.layers, v.heads, v.tokens}};
    absl::StatusOr<Array> a = ReadNpy(opt[sides[i].flag]);
    if (!a.ok()) return Fail(a.status());
    bool fits = false;
    for (auto& shape : shapes) {
      if (batched_input) shape.insert(shape.begin(), v.batch);
      fits = fits || a->shape == shape;
    }
    if (!fits) {
      std::vector<std::string> wanted;
      for (const auto& shape : shapes) wanted.push_back(absl::StrCat("[", absl::StrJoin(shape, ", "), "]"));
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          opt[sides[i].flag], ": expected shape ", absl::StrJoin(wanted, " or "), ", got [",
          absl::StrJoin(a->shape, ", "), "]")));
    }
    side_inputs[i] = *std::move(a);
    if (sides[i].residual) {
      v.residual_weights = side_inputs[i].values.data();
      v.residual_per_token = side_inputs[i].shape.size() == (batched_input ? 3u : 2u);
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
  auto client = client::Client::Connect(global.server);
  client::CallStats stats;
  absl::StatusOr<v1::ExplainResponse> response =
      client->ExplainEncoderDecoder(header, view, options, &stats);
  if (!response.ok()) return Fail(response.status());
  const bool batched = enc->shape.size() == 5;
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
