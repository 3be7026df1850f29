// ThreadSanitizer tree only: shows that the TSan stage still sees a race on a
// reactor's own state, and that what rpc/tsan_handoff.h states is exactly
// gRPC's order. A real gRPC server on 127.0.0.1:0 with one callback method
// (generic, bidi), called once by a real client:
//
//   tsan_canary handoff   the reactor's state crosses threads only through
//                         StartRead -> OnReadDone (written on the thread that
//                         makes the reactor, read on gRPC's callback thread),
//                         and StartWrite -> OnWriteDone (written by a thread of
//                         the reactor's own, like a worker, read on gRPC's):
//                         TSan must stay silent, and the reply must be right;
//   tsan_canary race      a thread of the reactor's own writes a member that
//                         OnReadDone reads, with no lock and no hand-off: TSan
//                         must report the race (in this file), whatever the
//                         ignore list and the suppressions hide of gRPC.
//
// Exit 0 when the reply is right (the race case is ended by TSan's report).
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "server/rpc/tsan_handoff.h"

namespace {

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

std::string Text(const grpc::ByteBuffer& b) {
  grpc::Slice slice;
  if (!b.DumpToSingleSlice(&slice).ok()) return "";
  return std::string(reinterpret_cast<const char*>(slice.begin()), slice.size());
}

class Canary : public attnroll::rpc::HandOffs<grpc::ServerGenericBidiReactor> {
 public:
  explicit Canary(bool race) : race_(race) {
    if (race_) {
      worker_ = std::thread([this] { value_ = 1; });  // no lock, no hand-off
    } else {
      value_ = 42;  // handed to OnReadDone by StartRead
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    const Reaction reaction = TookRead();
    if (!ok) return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
    const int seen = value_;  // the race case: TSan reports this read
    if (race_) {
      out_ = Bytes(Text(in_) + " " + std::to_string(seen));
      return StartWrite(&out_);
    }
    // Like a worker: another thread prepares the reply and starts the write.
    worker_ = std::thread([this, seen] {
      value_ = seen + 1;
      out_ = Bytes(Text(in_) + " " + std::to_string(seen));
      StartWrite(&out_);
    });
  }

  void OnWriteDone(bool ok) override {
    const Reaction reaction = TookWrite();
    if (!race_ && value_ != 43) {
      return Finish(grpc::Status(grpc::StatusCode::INTERNAL, "value: expected 43"));
    }
    Finish(ok ? grpc::Status::OK : grpc::Status(grpc::StatusCode::UNKNOWN, "write failed"));
  }

  void OnDone() override {
    TookAll();
    if (worker_.joinable()) worker_.join();
    delete this;
  }

 private:
  const bool race_;
  int value_ = 0;
  grpc::ByteBuffer in_, out_;
  std::thread worker_;
};

class Service : public grpc::CallbackGenericService {
 public:
  explicit Service(bool race) : race_(race) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    return new Canary(race_);
  }

 private:
  const bool race_;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "handoff" && mode != "race") {
    std::fprintf(stderr, "usage: tsan_canary handoff|race\n");
    return 2;
  }
  Service service(mode == "race");
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "tsan_canary: the server did not start\n");
    return 1;
  }
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const grpc::ByteBuffer request = Bytes("canary");
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/attnroll.canary/Echo", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  server->Shutdown();
  server->Wait();
  // (The race case reads 0 or 1, whichever thread came first.)
  const std::string got = Text(response);
  const bool right = mode == "race" ? got == "canary 0" || got == "canary 1" : got == "canary 42";
  if (!status.ok() || !right) {
    std::fprintf(stderr, "tsan_canary %s: got %d \"%s\" (%s)\n", mode.c_str(),
                 static_cast<int>(status.error_code()), got.c_str(), status.error_message().c_str());
    return 1;
  }
  std::printf("tsan_canary %s: %s\n", mode.c_str(), got.c_str());
  return 0;
}
