// Admission per pass: a pass (or a Compare, an audit) is admitted, or refused
// at once, when its header arrives, never in the middle of its stream. What
// is bounded: passes and calls in flight, the bytes of working memory they
// reserve (the memory budget), each client identity's share of both, and
// the passes of one connection. A request that does not fit waits a short
// while (max_wait, at most max_waiting of them) for room to be freed, and is
// refused with the limit that kept it out if none comes.
#ifndef ATTNROLL_SERVER_RUNTIME_ADMISSION_H_
#define ATTNROLL_SERVER_RUNTIME_ADMISSION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/runtime/timers.h"

namespace attnroll::runtime {

class Admission {
 public:
  struct Limits {
    int max_units = 64;               // passes and calls in flight (max_passes_in_flight)
    int64_t max_bytes = int64_t{4} << 30;  // the memory budget (max_memory_bytes)
    double client_share = 1.0;        // of both, for one client identity
    int max_per_connection = 256;     // passes of one connection (max_passes_per_connection)
    size_t max_waiting = 256;         // requests waiting for room
    absl::Duration max_wait = absl::Milliseconds(100);
  };

  struct Request {
    std::string client;      // identity: the authenticated name, else the peer's address
    std::string connection;  // the peer with its port: one connection
    int units = 1;           // passes (ExplainPair: 2)
    int64_t bytes = 0;       // working memory to reserve
    std::string what = "the pass";  // for messages
  };

  // What an admitted request holds; giving it back (Release or destruction)
  // frees room and admits whoever waits and now fits.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept { *this = std::move(other); }
    Ticket& operator=(Ticket&& other) noexcept;
    ~Ticket() { Release(); }
    void Release();
    bool held() const { return admission_ != nullptr; }
    int64_t bytes() const { return bytes_; }

   private:
    friend class Admission;
    Admission* admission_ = nullptr;
    std::string client, connection;
    int units_ = 0;
    int64_t bytes_ = 0;
  };

  using Done = std::function<void(absl::StatusOr<Ticket>)>;

  Admission(Limits limits, Timers* timers);
  ~Admission();  // waiters are refused (UNAVAILABLE) first
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Calls `done` exactly once: with a ticket, or a refusal naming the limit
  // (runtime::Refusal attached). On this thread before Admit returns when it
  // fits (or can never fit); else later, from the thread that frees room,
  // the timer thread at max_wait, or Shutdown. `done` must be short (it hands
  // the continuation to the pool).
  void Admit(Request request, Done done);
  // Admits now or refuses now, never waits.
  absl::StatusOr<Ticket> TryAdmit(const Request& request);
  // From now on every request is refused (UNAVAILABLE, refusal "shutdown"),
  // waiters included.
  void Shutdown();

  // Called whenever a release leaves no unit held, on the releasing thread
  // after the lock and the admitted waiters (the server's idle heap trim).
  // Set before the first request.
  void SetOnIdle(std::function<void()> on_idle) { on_idle_ = std::move(on_idle); }

  int units() const;
  int64_t bytes() const;
  int64_t capacity() const { return limits_.max_bytes; }
  int waiting() const;
  int connections() const;  // connections holding a ticket

 private:
  struct Usage {
    int units = 0;
    int64_t bytes = 0;
  };
  struct Waiter {
    Request request;
    Done done;
    Timers::Id timer = 0;
    absl::Time since;
  };

  // OK when `r` fits now; else why not (the refusal to give).
  absl::Status FitsLocked(const Request& r) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A refusal when `r` could never fit, whatever is released.
  absl::Status NeverFitsLocked(const Request& r) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  Ticket TakeLocked(const Request& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Give(Ticket& ticket);
  void Expire(uint64_t waiter);

  const Limits limits_;
  Timers* const timers_;
  std::function<void()> on_idle_;
  mutable absl::Mutex mu_;
  Usage total_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Usage> clients_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> connections_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);  // by id: first come first
  uint64_t next_waiter_ ABSL_GUARDED_BY(mu_) = 1;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_ADMISSION_H_
