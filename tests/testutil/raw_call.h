// Sends arbitrary bytes as the messages of a client-streaming or bidi call
// (grpc::GenericStub): what a broken or hostile client can put on the wire,
// messages that do not parse included. Returns the call's final status.
#ifndef ATTNROLL_TESTS_TESTUTIL_RAW_CALL_H_
#define ATTNROLL_TESTS_TESTUTIL_RAW_CALL_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"

namespace attnroll::testing {

inline grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

// `method`: "/attnroll.v1.AttnrollService/Explain". Reads every response
// until the end (into `responses`, as bytes, when given).
inline grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                            const std::vector<std::string>& messages,
                            absl::Duration timeout = absl::Seconds(20),
                            std::vector<std::string>* responses = nullptr) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(&ctx, method, &cq);
  void* tag;
  bool ok;
  auto wait = [&] { return cq.Next(&tag, &ok) && ok; };
  call->StartCall(reinterpret_cast<void*>(1));
  bool open = wait();
  for (const std::string& m : messages) {
    if (!open) break;
    call->Write(Bytes(m), reinterpret_cast<void*>(2));
    open = wait();
  }
  if (open) {
    call->WritesDone(reinterpret_cast<void*>(3));
    wait();
  }
  grpc::ByteBuffer response;
  for (;;) {
    call->Read(&response, reinterpret_cast<void*>(4));
    if (!wait()) break;
    if (responses != nullptr) {
      std::vector<grpc::Slice> slices;
      (void)response.Dump(&slices);
      std::string bytes;
      for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      responses->push_back(std::move(bytes));
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_RAW_CALL_H_
