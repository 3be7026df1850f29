// Messages of the raw (byte buffer) methods: every reactor reads the bytes
// gRPC received and parses them itself, so a message that does not parse is
// an INVALID_ARGUMENT naming it, never mistaken for the end of the stream.
#ifndef ATTNROLL_SERVER_RPC_PROTO_IO_H_
#define ATTNROLL_SERVER_RPC_PROTO_IO_H_

#include <cstdint>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace attnroll::rpc {

// Parses message `index` (1-based) of the call; INVALID_ARGUMENT if the bytes
// are not a `what`.
template <typename Message>
absl::Status ParseMessage(grpc::ByteBuffer& buffer, int64_t index, absl::string_view what,
                          Message* out) {
  const size_t bytes = buffer.Length();
  out->Clear();
  grpc::ProtoBufferReader reader(&buffer);
  if (!out->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "message ", index, ": expected a ", what, ", got ", bytes, " bytes that do not parse as one"));
  }
  buffer.Clear();
  return absl::OkStatus();
}

// Serialises `message` into `out` (for a write or a unary response).
template <typename Message>
void SerializeMessage(const Message& message, grpc::ByteBuffer* out) {
  bool own = false;
  grpc::SerializationTraits<Message>::Serialize(message, out, &own);
}

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_PROTO_IO_H_
