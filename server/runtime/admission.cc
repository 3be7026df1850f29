#include "server/runtime/admission.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/runtime/refusal.h"

namespace attnroll::runtime {

Admission::Ticket& Admission::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    Release();
    admission_ = other.admission_;
    client = std::move(other.client);
    connection = std::move(other.connection);
    units_ = other.units_;
    bytes_ = other.bytes_;
    other.admission_ = nullptr;
    other.units_ = 0;
    other.bytes_ = 0;
  }
  return *this;
}

void Admission::Ticket::Release() {
  if (admission_ == nullptr) return;
  Admission* a = admission_;
  a->Give(*this);
  admission_ = nullptr;
  units_ = 0;
  bytes_ = 0;
}

Admission::Admission(Limits limits, Timers* timers) : limits_(limits), timers_(timers) {}

Admission::~Admission() { Shutdown(); }

absl::Status Admission::NeverFitsLocked(const Request& r) const {
  if (shut_down_) return Refused(Refusal::kShutdown, "server: shutting down, not accepting new passes");
  if (r.bytes > limits_.max_bytes) {
    return Refused(Refusal::kMemory, absl::StrCat("memory: ", r.what, " needs ", r.bytes,
                                                  " bytes of working memory, more than all of the "
                                                  "server's max_memory_bytes of ", limits_.max_bytes));
  }
  const double share_bytes = limits_.client_share * static_cast<double>(limits_.max_bytes);
  const double share_units = limits_.client_share * limits_.max_units;
  if (static_cast<double>(r.bytes) > share_bytes || r.units > std::max(1.0, share_units)) {
    return Refused(Refusal::kClientShare,
                   absl::StrFormat("client_share: %s needs %d bytes and %d passes, over one client's "
                                   "share (%g) of max_memory_bytes %d and max_passes_in_flight %d",
                                   r.what, r.bytes, r.units, limits_.client_share, limits_.max_bytes,
                                   limits_.max_units));
  }
  if (r.units > limits_.max_units) {
    return Refused(Refusal::kPasses, absl::StrCat("passes: ", r.what, " needs ", r.units,
                                                  " passes, over the server's max_passes_in_flight of ",
                                                  limits_.max_units));
  }
  return absl::OkStatus();
}

absl::Status Admission::FitsLocked(const Request& r) const {
  if (absl::Status s = NeverFitsLocked(r); !s.ok()) return s;
  auto conn = connections_.find(r.connection);
  const int on_connection = conn == connections_.end() ? 0 : conn->second;
  if (on_connection + r.units > limits_.max_per_connection) {
    return Refused(Refusal::kLimits, absl::StrCat("connection: ", on_connection,
                                                  " passes are open on this connection, the "
                                                  "server's max_passes_per_connection is ",
                                                  limits_.max_per_connection));
  }
  if (total_.units + r.units > limits_.max_units) {
    return Refused(Refusal::kPasses, absl::StrCat("passes: ", total_.units,
                                                  " passes and calls are in flight, the server's "
                                                  "max_passes_in_flight is ", limits_.max_units));
  }
  if (total_.bytes + r.bytes > limits_.max_bytes) {
    return Refused(Refusal::kMemory,
                   absl::StrCat("memory: ", r.what, " needs ", r.bytes, " bytes of working memory; ",
                                total_.bytes, " of the server's max_memory_bytes of ",
                                limits_.max_bytes, " are in use"));
  }
  if (limits_.client_share < 1.0) {
    auto it = clients_.find(r.client);
    const Usage mine = it == clients_.end() ? Usage() : it->second;
    const double share_bytes = limits_.client_share * static_cast<double>(limits_.max_bytes);
    const double share_units = std::max(1.0, limits_.client_share * limits_.max_units);
    if (mine.units + r.units > share_units || static_cast<double>(mine.bytes + r.bytes) > share_bytes) {
      return Refused(Refusal::kClientShare,
                     absl::StrFormat("client_share: client %s holds %d passes and %d bytes; its share "
                                     "(%g) is %g passes and %.0f bytes",
                                     r.client, mine.units, mine.bytes, limits_.client_share,
                                     share_units, share_bytes));
    }
  }
  return absl::OkStatus();
}

Admission::Ticket Admission::TakeLocked(const Request& r) {
  total_.units += r.units;
  total_.bytes += r.bytes;
  Usage& mine = clients_[r.client];
  mine.units += r.units;
  mine.bytes += r.bytes;
  connections_[r.connection] += r.units;
  Ticket t;
  t.admission_ = this;
  t.client = r.client;
  t.connection = r.connection;
  t.units_ = r.units;
  t.bytes_ = r.bytes;
  return t;
}

absl::StatusOr<Admission::Ticket> Admission::TryAdmit(const Request& request) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = FitsLocked(request); !s.ok()) return s;
  return TakeLocked(request);
}

void Admission::Admit(Request request, Done done) {
  absl::StatusOr<Ticket> outcome;
  {
    absl::MutexLock lock(&mu_);
    absl::Status refusal = FitsLocked(request);
    if (refusal.ok()) {
      outcome = TakeLocked(request);
    } else {
      // Full for now (not too big for ever): wait for room, if there is room to wait.
      const std::optional<Refusal> why = RefusalOf(refusal);
      const bool full = why == Refusal::kPasses || why == Refusal::kMemory || why == Refusal::kClientShare;
      if (full && NeverFitsLocked(request).ok() && waiters_.size() < limits_.max_waiting &&
          limits_.max_wait > absl::ZeroDuration()) {
        const uint64_t id = next_waiter_++;
        Waiter& w = waiters_[id];
        w.request = std::move(request);
        w.done = std::move(done);
        w.since = absl::Now();
        w.timer = timers_->Schedule(w.since + limits_.max_wait, [this, id] { Expire(id); });
        return;
      }
      outcome = std::move(refusal);
    }
  }
  done(std::move(outcome));
}

void Admission::Expire(uint64_t id) {
  Done done;
  absl::StatusOr<Ticket> outcome;
  {
    absl::MutexLock lock(&mu_);
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return;  // admitted (or refused) meanwhile
    const absl::Status refusal = FitsLocked(it->second.request);
    if (refusal.ok()) {
      outcome = TakeLocked(it->second.request);  // room appeared just now
    } else {
      outcome = WithRefusal(
          absl::Status(refusal.code(), absl::StrFormat("%s (after waiting %.3g s for room)",
                                                       refusal.message(),
                                                       absl::ToDoubleSeconds(absl::Now() - it->second.since))),
          RefusalOf(refusal).value_or(Refusal::kQueue));
    }
    done = std::move(it->second.done);
    waiters_.erase(it);
  }
  done(std::move(outcome));
}

void Admission::Give(Ticket& ticket) {
  std::vector<std::pair<Done, Ticket>> admitted;
  std::vector<Timers::Id> timers;
  bool idle;
  {
    absl::MutexLock lock(&mu_);
    total_.units -= ticket.units_;
    total_.bytes -= ticket.bytes_;
    auto c = clients_.find(ticket.client);
    if (c != clients_.end()) {
      c->second.units -= ticket.units_;
      c->second.bytes -= ticket.bytes_;
      if (c->second.units == 0 && c->second.bytes == 0) clients_.erase(c);
    }
    auto k = connections_.find(ticket.connection);
    if (k != connections_.end() && (k->second -= ticket.units_) <= 0) connections_.erase(k);
    // First come, first served among those that fit now.
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (!FitsLocked(it->second.request).ok()) {
        ++it;
        continue;
      }
      admitted.emplace_back(std::move(it->second.done), TakeLocked(it->second.request));
      timers.push_back(it->second.timer);
      it = waiters_.erase(it);
    }
    idle = total_.units == 0;
  }
  for (Timers::Id id : timers) timers_->Cancel(id);
  for (auto& [done, t] : admitted) done(std::move(t));
  if (idle && on_idle_) on_idle_();
}

void Admission::Shutdown() {
  std::vector<std::pair<Done, Timers::Id>> refused;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    for (auto& [id, w] : waiters_) refused.emplace_back(std::move(w.done), w.timer);
    waiters_.clear();
  }
  for (auto& [done, timer] : refused) {
    timers_->Cancel(timer);
    done(Refused(Refusal::kShutdown, "server: shutting down, not accepting new passes"));
  }
}

int Admission::units() const {
  absl::MutexLock lock(&mu_);
  return total_.units;
}

int64_t Admission::bytes() const {
  absl::MutexLock lock(&mu_);
  return total_.bytes;
}

int Admission::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiters_.size());
}

int Admission::connections() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(connections_.size());
}

}  // namespace attnroll::runtime
