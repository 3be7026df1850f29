// An in-process attnroll server on 127.0.0.1:0 and a client connected to it,
// shared by the tests of every reactor, with helpers that send raw messages.
#ifndef ATTNROLL_TESTS_TESTUTIL_SERVER_FIXTURE_H_
#define ATTNROLL_TESTS_TESTUTIL_SERVER_FIXTURE_H_

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cpp/attnroll_client.h"
#include "proto/cpp/grpc_status.h"
#include "server/rpc/server.h"
#include "tests/testutil/attention_testutil.h"
#include "tests/testutil/pass_testutil.h"

namespace attnroll::testing {

// The client's view of a test attention array.
inline client::AttentionView ViewOf(const Attention& a) {
  return {a.values.data(), a.batch, a.layers, a.heads, a.tokens};
}

class ServerTest : public ::testing::Test {
 protected:
  // Small limits so tests can reach them; metrics off (the Exposer's
  // destructor is slow; metrics are tested end to end).
  static runtime::ServerConfig Config() {
    runtime::ServerConfig c;
    c.listen = {"127.0.0.1:0"};
    c.metrics_listen = "";
    c.workers = 2;
    c.queue_size = 16;
    c.max_memory_bytes = 64 << 20;
    c.limits.max_message_bytes = 1 << 20;
    c.limits.max_tokens = 1024;
    c.max_passes_per_stream = 3;
    return c;
  }
  void SetUp() override { StartServer(Config()); }
  void StartServer(const runtime::ServerConfig& c) {
    client_.reset();
    server_.reset();
    auto s = rpc::Server::Start(c);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    client_ = client::Client::Connect("127.0.0.1:" + std::to_string(server_->port()));
  }

  // Sends `messages` raw over Explain and returns the final status.
  absl::StatusOr<v1::ExplainResponse> RawExplain(const std::vector<v1::ExplainRequest>& messages,
                                                 absl::Duration timeout = absl::Seconds(20)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::ExplainResponse response;
    auto writer = client_->stub()->Explain(&ctx, &response);
    for (const auto& m : messages) {
      if (!writer->Write(m)) break;
    }
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  static v1::ExplainRequest HeaderMsg(const v1::PassHeader& h) {
    v1::ExplainRequest r;
    *r.mutable_header() = h;
    return r;
  }
  static v1::ExplainRequest LayerMsg(const v1::LayerChunk& c) {
    v1::ExplainRequest r;
    *r.mutable_layer() = c;
    return r;
  }
  // Header + every layer of `a` (one message per layer).
  static std::vector<v1::ExplainRequest> Pass(const Attention& a, const v1::PassHeader& h) {
    std::vector<v1::ExplainRequest> msgs = {HeaderMsg(h)};
    for (int l = 0; l < a.layers; ++l) {
      for (auto& c : ChunksOf(a, l)) msgs.push_back(LayerMsg(c));
    }
    return msgs;
  }

  // ExplainStream messages: `m` (a header or a layer, as Pass() makes them)
  // for the pass `id`, and that pass's end.
  static v1::StreamRequest StreamMsg(const std::string& id, const v1::ExplainRequest& m) {
    v1::StreamRequest r;
    r.set_request_id(id);
    if (m.has_header()) *r.mutable_header() = m.header();
    if (m.has_layer()) *r.mutable_layer() = m.layer();
    return r;
  }
  static v1::StreamRequest StreamEnd(const std::string& id) {
    v1::StreamRequest r;
    r.set_request_id(id);
    r.mutable_end();
    return r;
  }

  // Waits (up to `within`) for every pass's memory to be given back.
  void ExpectMemoryReleased(absl::Duration within = absl::Seconds(2)) {
    const absl::Time deadline = absl::Now() + within;
    while (server_->memory_reserved() != 0 && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(server_->memory_reserved(), 0);
  }

  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<client::Client> client_;
};

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_SERVER_FIXTURE_H_
