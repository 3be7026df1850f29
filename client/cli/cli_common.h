// Small pieces every CLI command uses: error reporting (gRPC code names on
// stderr, exit codes), JSON strings, flag parsing, .npy arrays as tensors.
#ifndef ATTNROLL_CLIENT_CLI_CLI_COMMON_H_
#define ATTNROLL_CLIENT_CLI_CLI_COMMON_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnroll/v1/analysis.pb.h"
#include "attnroll/v1/audit.pb.h"
#include "attnroll/v1/pass.pb.h"
#include "attnroll/v1/tensor.pb.h"
#include "client/cpp/head_fusion.h"
#include "client/npy/npy.h"

namespace attnroll::cli {

using npy::Array;
using npy::ReadNpy;
using npy::WriteNpy;

// Prints "attnroll: CODE: message" on stderr; returns exit code 1.
int Fail(const absl::Status& status);
// Ends the process with `code` after flushing stdout and stderr, without
// destroying what the caller still holds: tearing down the gRPC channel (its
// threads) and unmapping a large input took milliseconds of a short command,
// and the kernel drops both at exit anyway. Call it when every file the
// command writes is closed. Sanitizer builds return `code` instead, so their
// leak and race checks still see every object destroyed.
int ExitWithoutTeardown(int code);
// The CPUs this process may run on (its affinity mask, e.g. a cpuset; a CPU
// quota such as a Kubernetes limit does not show here).
int UsableCpus();
// Prints "attnroll COMMAND: message (see ...--help)"; returns exit code 2.
int UsageError(const std::string& command, const std::string& message);
// Parses a command's arguments: `--NAME VALUE` for names in `valued`,
// `--NAME` (set to "1") for names in `flags`. Returns "", "help" for --help
// or -h, or a usage message naming the bad argument.
std::string ParseOptions(const std::vector<std::string>& args, const std::set<std::string>& valued,
                         const std::set<std::string>& flags, std::map<std::string, std::string>* opt);
// Writes an audit report as JSON (proto field names, indented).
absl::Status WriteReportJson(const v1::AuditReport& report, const std::string& path);
// A JSON string literal (quotes included).
std::string JsonString(const std::string& s);
// "HxW" with both > 0.
bool ParseGrid(const std::string& s, uint32_t* h, uint32_t* w);
// An FP32 tensor holding `array`.
void ToTensor(const Array& array, v1::Tensor* tensor);

// --client-fusion auto|off|on into *out (unchanged when absent). Returns ""
// or the usage message.
std::string ParseClientFusion(const std::map<std::string, std::string>& opt,
                              client::ClientFusion* out);

// Options every explaining command shares: --scale, --prefix, --grid and
// --wire (each optional). Returns "" or the usage message of the bad one.
std::string ApplySharedExplainOptions(const std::map<std::string, std::string>& opt,
                                      v1::ReadOut* readout, v1::Layout* layout, v1::DType* wire);
// "mean" | "max" | "min" | "weighted" (| "none" when allowed).
bool ParseFusion(const std::string& name, bool allow_none, v1::HeadFusion* out);

// Stacks the per-sequence maps of a result into one array: [k, ...] for one
// unbatched sequence, else [B, ...], zero-filling the tail of shorter
// (padded) sequences.
absl::StatusOr<Array> AssembleMaps(const google::protobuf::RepeatedPtrField<v1::Tensor>& maps,
                                   bool batched);

}  // namespace attnroll::cli

#endif  // ATTNROLL_CLIENT_CLI_CLI_COMMON_H_
