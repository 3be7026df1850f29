#include "client/cli/cli_common.h"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace attnroll::cli {


int ExitWithoutTeardown(int code) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return code;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return code;
#endif
#endif
  // A lost write of stdout (a full disk, a closed pipe) is a failure, as exit() would not say.
  if ((std::fflush(nullptr) != 0 || std::ferror(stdout)) && code == 0) {
    std::fprintf(stderr, "attnroll: writing standard output failed\n");
    code = 1;
  }
  std::_Exit(code);
}

int UsableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "attnroll: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

int UsageError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "attnroll %s: %s (see attnroll %s --help)\n", command.c_str(),
               message.c_str(), command.c_str());
  return 2;
}

std::string ParseOptions(const std::vector<std::string>& args, const std::set<std::string>& valued,
                         const std::set<std::string>& flags, std::map<std::string, std::string>* opt) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") return "help";
    if (a.rfind("--", 0) != 0) return "unexpected argument '" + a + "'";
    const std::string name = a.substr(2);
    if (flags.count(name)) {
      (*opt)[name] = "1";
    } else if (valued.count(name)) {
      if (i + 1 >= args.size()) return a + " needs a value";
      (*opt)[name] = args[++i];
    } else {
      return "unknown option " + a;
    }
  }
  return "";
}

absl::Status WriteReportJson(const v1::AuditReport& report, const std::string& path) {
  std::string json;
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.add_whitespace = true;
  json_options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(report, &json, json_options).ok()) {
    return absl::InternalError("cannot write the report as JSON");
  }
  std::ofstream out(path);
  out << json;
  if (!out.flush()) return absl::PermissionDeniedError(path + ": cannot write");
  return absl::OkStatus();
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

bool ParseGrid(const std::string& s, uint32_t* h, uint32_t* w) {
  std::vector<std::string> parts = absl::StrSplit(s, 'x');
  return parts.size() == 2 && absl::SimpleAtoi(parts[0], h) && absl::SimpleAtoi(parts[1], w) &&
         *h > 0 && *w > 0;
}

void ToTensor(const Array& array, v1::Tensor* tensor) {
  tensor->set_dtype(v1::DTYPE_FP32);
  for (int64_t d : array.shape) tensor->add_shape(d);
  tensor->mutable_data()->assign(reinterpret_cast<const char*>(array.values.data()),
                                 array.values.size() * sizeof(float));
}

bool ParseFusion(const std::string& name, bool allow_none, v1::HeadFusion* out) {
  static const std::map<std::string, v1::HeadFusion> kFusion = {
      {"mean", v1::HEAD_FUSION_MEAN}, {"max", v1::HEAD_FUSION_MAX}, {"min", v1::HEAD_FUSION_MIN},
      {"weighted", v1::HEAD_FUSION_WEIGHTED}, {"none", v1::HEAD_FUSION_NONE}};
  auto it = kFusion.find(name);
  if (it == kFusion.end() || (it->second == v1::HEAD_FUSION_NONE && !allow_none)) return false;
  *out = it->second;
  return true;
}

std::string ParseClientFusion(const std::map<std::string, std::string>& opt,
                              client::ClientFusion* out) {
  static const std::map<std::string, client::ClientFusion> kModes = {
      {"auto", client::ClientFusion::kAuto}, {"off", client::ClientFusion::kOff},
      {"on", client::ClientFusion::kOn}};
  auto it = opt.find("client-fusion");
  if (it == opt.end()) return "";
  auto mode = kModes.find(it->second);
  if (mode == kModes.end()) return "--client-fusion: expected auto|off|on, got '" + it->second + "'";
  *out = mode->second;
  return "";
}

std::string ApplySharedExplainOptions(const std::map<std::string, std::string>& opt,
                                      v1::ReadOut* readout, v1::Layout* layout, v1::DType* wire) {
  static const std::map<std::string, v1::Scaling> kScale = {
      {"none", v1::SCALING_NONE}, {"max", v1::SCALING_MAX},
      {"minmax", v1::SCALING_MINMAX}, {"sum", v1::SCALING_SUM}};
  static const std::map<std::string, v1::DType> kWire = {
      {"fp32", v1::DTYPE_FP32}, {"fp16", v1::DTYPE_FP16}, {"bf16", v1::DTYPE_BF16}};
  if (auto it = opt.find("scale"); it != opt.end()) {
    if (!kScale.count(it->second)) return "--scale: expected none|max|minmax|sum";
    readout->set_scaling(kScale.at(it->second));
  }
  if (auto it = opt.find("prefix"); it != opt.end()) {
    uint32_t p;
    if (!absl::SimpleAtoi(it->second, &p)) return "--prefix: expected a count";
    layout->set_prefix_tokens(p);
  }
  if (auto it = opt.find("grid"); it != opt.end()) {
    uint32_t h, w;
    if (!ParseGrid(it->second, &h, &w)) return "--grid: expected HxW, e.g. 14x14";
    layout->mutable_grid()->set_height(h);
    layout->mutable_grid()->set_width(w);
  }
  if (auto it = opt.find("wire"); it != opt.end() && wire != nullptr) {
    if (!kWire.count(it->second)) return "--wire: expected fp32|fp16|bf16";
    *wire = kWire.at(it->second);
  }
  return "";
}

absl::StatusOr<Array> AssembleMaps(const google::protobuf::RepeatedPtrField<v1::Tensor>& maps,
                                   bool batched) {
  if (maps.size() == 0) return absl::InternalError("response has no maps");
  std::vector<int64_t> full(maps[0].shape().begin(), maps[0].shape().end());
  for (const v1::Tensor& t : maps) {
    if (t.dtype() != v1::DTYPE_FP32 || t.shape_size() != static_cast<int>(full.size())) {
      return absl::InternalError("response maps have inconsistent shapes");
    }
    for (int i = 0; i < t.shape_size(); ++i) full[i] = std::max<int64_t>(full[i], t.shape(i));
  }
  const int64_t width = full.back();
  int64_t per_seq = 1;
  for (int64_t d : full) per_seq *= d;
  Array out;
  if (batched) out.shape.push_back(maps.size());
  out.shape.insert(out.shape.end(), full.begin(), full.end());
  out.values.assign(static_cast<size_t>(per_seq * maps.size()), 0.0f);
  for (int b = 0; b < maps.size(); ++b) {
    const v1::Tensor& t = maps[b];
    const int64_t w = t.shape(t.shape_size() - 1);
    const int64_t rows = static_cast<int64_t>(t.data().size() / sizeof(float)) / std::max<int64_t>(w, 1);
    const float* src = reinterpret_cast<const float*>(t.data().data());
    float* dst = out.values.data() + b * per_seq;
    for (int64_t r = 0; r < rows; ++r) std::copy(src + r * w, src + (r + 1) * w, dst + r * width);
  }
  return out;
}


}  // namespace attnroll::cli
