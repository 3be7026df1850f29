// What the fuzz targets share: the limits they run the server's code under
// (small, so one input takes milliseconds), the framing of an input that holds
// several messages of a call, and a check of the memory a pass holds against
// what its plan promised admission.
#ifndef ATTNROLL_TESTS_FUZZ_FUZZ_INPUT_H_
#define ATTNROLL_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "absl/strings/string_view.h"
#include "server/runtime/config.h"

namespace attnroll::fuzz {

// The server's per-pass limits, scaled down: every count is still checked
// the way the server checks it, but a pass holds at most a few MB.
inline runtime::PassLimits Limits() {
  runtime::PassLimits l;
  l.max_layers = 4;
  l.max_heads = 4;
  l.max_tokens = 24;
  l.max_batch = 3;
  l.max_message_bytes = 1 << 20;
  l.max_pass_bytes = 1 << 20;
  l.max_analyses = 4;
  l.max_rows = 24;
  l.max_response_bytes = 1 << 20;
  l.max_flow_cost = 2e6;
  l.max_compare_cost = 2e6;
  return l;
}

// Threads the pass plans count flow scratch for (the server passes --workers).
constexpr int kThreads = 2;

// An input holding the messages of one call (each message's bytes as the
// server receives them) is the wire form of `repeated bytes message = 1`, so
// `protoc --decode_raw < file` shows it. Framing that does not parse ends the
// list where it stops parsing.
inline std::vector<std::string> SplitMessages(const uint8_t* data, size_t size) {
  std::vector<std::string> out;
  google::protobuf::io::CodedInputStream in(data, static_cast<int>(size));
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag != ((1u << 3) | 2u)) break;  // field 1, length-delimited
    uint32_t length;
    std::string bytes;
    if (!in.ReadVarint32(&length) || !in.ReadString(&bytes, static_cast<int>(length))) break;
    out.push_back(std::move(bytes));
  }
  return out;
}

inline std::string JoinMessages(const std::vector<std::string>& messages) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    for (const std::string& m : messages) {
      coded.WriteTag((1u << 3) | 2u);
      coded.WriteVarint32(static_cast<uint32_t>(m.size()));
      coded.WriteString(m);
    }
  }
  return out;
}

// Stops the run (a crash libFuzzer reports, with the input) when `ok` is false.
inline void Require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace attnroll::fuzz

#endif  // ATTNROLL_TESTS_FUZZ_FUZZ_INPUT_H_
