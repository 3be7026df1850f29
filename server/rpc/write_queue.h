// The responses a bidi reactor has queued for its client, written one at a
// time (gRPC allows one write in flight per call). Not thread-safe: the
// reactor guards it with its own mutex, together with the state that depends
// on it.
#ifndef ATTNROLL_SERVER_RPC_WRITE_QUEUE_H_
#define ATTNROLL_SERVER_RPC_WRITE_QUEUE_H_

#include <cstddef>
#include <deque>
#include <utility>

namespace attnroll::rpc {

template <typename Response>
class WriteQueue {
 public:
  // Queues `response`; returns it when it must be written now (no write in
  // flight), else nullptr. The pointer stays valid until its write is done.
  const Response* Push(Response response) {
    queue_.push_back(std::move(response));
    if (writing_) return nullptr;
    writing_ = true;
    return &queue_.front();
  }
  // The write in flight is done (`ok` false: the client is gone and nothing
  // more can be sent). Returns the next response to write, or nullptr.
  const Response* Pop(bool ok) {
    queue_.pop_front();
    if (!ok) queue_.clear();
    if (queue_.empty()) {
      writing_ = false;
      return nullptr;
    }
    return &queue_.front();
  }
  // Responses queued, the one being written included.
  size_t size() const { return queue_.size(); }
  // Nothing queued and no write in flight.
  bool idle() const { return !writing_ && queue_.empty(); }

 private:
  std::deque<Response> queue_;
  bool writing_ = false;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_WRITE_QUEUE_H_
