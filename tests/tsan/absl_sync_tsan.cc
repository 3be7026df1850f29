// ThreadSanitizer builds only (cmake/sanitizers.cmake, ATTNROLL_SANITIZE=thread).
//
// Debian's abseil is not built with -fsanitize=thread, so its absl::Mutex,
// absl::CondVar and absl::Notification synchronise in code TSan does not see:
// without help, every access the project guards with an absl::Mutex (and
// every handoff gRPC makes under its absl::Mutex-based locks) looks like a
// data race. abseil's own TSan build annotates these operations with TSan's
// mutex interface (absl/synchronization/mutex.cc, ABSL_TSAN_MUTEX_*); this
// file makes the same annotations around the uninstrumented implementation.
//
// How: the executable defines the public member functions below. The
// executable's definitions take precedence over libabsl_synchronization.so's
// for every caller (the project's code, gRPC and abseil itself call them
// through the PLT), and each one annotates and calls the library's own
// implementation, found with dlsym(RTLD_NEXT). Nothing else changes: the
// lock is abseil's, only TSan now sees its acquire and release.
//
// The annotations follow mutex.cc: a lock is pre_lock ... post_lock, an
// unlock pre_unlock ... post_unlock (TSan ignores memory accesses in between,
// where abseil may evaluate other threads' Conditions), a wait is an unlock
// followed by a lock of the same mode, and a Notification releases at
// Notify() and acquires when a wait returns true (its inline
// HasBeenNotified() loads `notified_yet_` with acquire order, so the release
// is made on that address).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#if !defined(__SANITIZE_THREAD__) && !(defined(__has_feature) && __has_feature(thread_sanitizer))
#error "tests/tsan/absl_sync_tsan.cc belongs to ThreadSanitizer builds only"
#endif

namespace {

#define ATTNROLL_TSAN_STR2(x) #x
#define ATTNROLL_TSAN_STR(x) ATTNROLL_TSAN_STR2(x)

// "_ZN4absl<len><inline namespace>" + tail: the mangled name of a member of
// absl's inline namespace (debian3 on Debian 12).
std::string Mangled(const char* prefix, const char* tail) {
  const std::string ns = ATTNROLL_TSAN_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return std::string(prefix) + "4absl" + std::to_string(ns.size()) + ns + tail;
}

template <typename F>
F Real(const char* prefix, const char* tail) {
  const std::string name = Mangled(prefix, tail);
  void* f = dlsym(RTLD_NEXT, name.c_str());
  if (f == nullptr) {
    std::fprintf(stderr, "absl_sync_tsan: %s not found in abseil (%s)\n", name.c_str(), dlerror());
    std::abort();
  }
  return reinterpret_cast<F>(f);
}

// The mode a held mutex is in, as abseil decides it for a wait: exclusive
// when the writer bit (kMuWriter = 0x0008 in mutex.cc) of its only word is
// set, shared otherwise.
unsigned HeldFlags(const absl::Mutex* mu) {
  static_assert(sizeof(absl::Mutex) == sizeof(std::atomic<intptr_t>), "absl::Mutex is one word");
  const auto* word = reinterpret_cast<const std::atomic<intptr_t>*>(mu);
  return (word->load(std::memory_order_relaxed) & 0x0008) != 0 ? 0 : __tsan_mutex_read_lock;
}

// absl::Notification is {Mutex mutex_; std::atomic<bool> notified_yet_;}.
void* NotifiedWord(const absl::Notification* n) {
  static_assert(sizeof(absl::Notification) == 2 * sizeof(absl::Mutex), "absl::Notification layout");
  return const_cast<char*>(reinterpret_cast<const char*>(n) + sizeof(absl::Mutex));
}

absl::Time DeadlineFromTimeout(absl::Duration timeout) {
  return timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
}

using MutexFn = void (*)(absl::Mutex*);
using MutexTryFn = bool (*)(absl::Mutex*);
using MutexCondFn = void (*)(absl::Mutex*, const absl::Condition&);
using MutexCondDeadlineFn = bool (*)(absl::Mutex*, const absl::Condition&, absl::Time);
using CondVarWaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using CondVarDeadlineFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);
using NotifyFn = void (*)(absl::Notification*);
using WaitFn = void (*)(const absl::Notification*);
using WaitDeadlineFn = bool (*)(const absl::Notification*, absl::Time);

// Resolved once, before main (static initialisation of this file).
struct RealFunctions {
  MutexFn lock = Real<MutexFn>("_ZN", "5Mutex4LockEv");
  MutexFn unlock = Real<MutexFn>("_ZN", "5Mutex6UnlockEv");
  MutexTryFn try_lock = Real<MutexTryFn>("_ZN", "5Mutex7TryLockEv");
  MutexFn reader_lock = Real<MutexFn>("_ZN", "5Mutex10ReaderLockEv");
  MutexFn reader_unlock = Real<MutexFn>("_ZN", "5Mutex12ReaderUnlockEv");
  MutexTryFn reader_try_lock = Real<MutexTryFn>("_ZN", "5Mutex13ReaderTryLockEv");
  MutexCondFn lock_when = Real<MutexCondFn>("_ZN", "5Mutex8LockWhenERKNS0_9ConditionE");
  MutexCondDeadlineFn lock_when_deadline =
      Real<MutexCondDeadlineFn>("_ZN", "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  MutexCondFn reader_lock_when = Real<MutexCondFn>("_ZN", "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  MutexCondDeadlineFn reader_lock_when_deadline = Real<MutexCondDeadlineFn>(
      "_ZN", "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  MutexCondFn await = Real<MutexCondFn>("_ZN", "5Mutex5AwaitERKNS0_9ConditionE");
  MutexCondDeadlineFn await_deadline =
      Real<MutexCondDeadlineFn>("_ZN", "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  MutexFn destroy = Real<MutexFn>("_ZN", "5MutexD1Ev");
  CondVarWaitFn wait = Real<CondVarWaitFn>("_ZN", "7CondVar4WaitEPNS0_5MutexE");
  CondVarDeadlineFn wait_deadline =
      Real<CondVarDeadlineFn>("_ZN", "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  NotifyFn notify = Real<NotifyFn>("_ZN", "12Notification6NotifyEv");
  WaitFn wait_for_notification = Real<WaitFn>("_ZNK", "12Notification19WaitForNotificationEv");
  WaitDeadlineFn wait_for_notification_deadline =
      Real<WaitDeadlineFn>("_ZNK", "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
};

const RealFunctions& R() {
  static const RealFunctions* real = new RealFunctions();
  return *real;
}
// Resolve before any thread starts.
[[maybe_unused]] const RealFunctions& kResolved = R();

// A lock operation `op` of mode `flags` (0 or read_lock) that returns
// whether it acquired; a try that failed is annotated as failed.
template <typename Op>
bool Locked(absl::Mutex* mu, unsigned flags, Op op) {
  __tsan_mutex_pre_lock(mu, flags);
  const bool acquired = op();
  __tsan_mutex_post_lock(mu, acquired ? flags : flags | __tsan_mutex_try_lock_failed, 0);
  return acquired;
}

void Unlocked(absl::Mutex* mu, unsigned flags, void (*op)(absl::Mutex*)) {
  __tsan_mutex_pre_unlock(mu, flags);
  op(mu);
  __tsan_mutex_post_unlock(mu, flags);
}

// A wait that releases `mu` (held in `flags` mode) and holds it again on
// return: abseil's AwaitCommon and CondVar::WaitCommon annotate it so.
template <typename Op>
auto Waited(absl::Mutex* mu, Op op) {
  const unsigned flags = HeldFlags(mu);
  __tsan_mutex_pre_unlock(mu, flags);
  __tsan_mutex_post_unlock(mu, flags);
  __tsan_mutex_pre_lock(mu, flags);
  auto result = op();
  __tsan_mutex_post_lock(mu, flags, 0);
  return result;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  Locked(this, 0, [this] { R().lock(this); return true; });
}
void Mutex::Unlock() { Unlocked(this, 0, R().unlock); }
bool Mutex::TryLock() {
  return Locked(this, __tsan_mutex_try_lock, [this] { return R().try_lock(this); });
}
void Mutex::ReaderLock() {
  Locked(this, __tsan_mutex_read_lock, [this] { R().reader_lock(this); return true; });
}
void Mutex::ReaderUnlock() { Unlocked(this, __tsan_mutex_read_lock, R().reader_unlock); }
bool Mutex::ReaderTryLock() {
  return Locked(this, __tsan_mutex_read_lock | __tsan_mutex_try_lock,
                [this] { return R().reader_try_lock(this); });
}

// The ...When forms always return holding the mutex (false: timed out).
void Mutex::LockWhen(const Condition& cond) {
  Locked(this, 0, [&] { R().lock_when(this, cond); return true; });
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  bool result = false;
  Locked(this, 0, [&] { result = R().lock_when_deadline(this, cond, deadline); return true; });
  return result;
}
bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  return LockWhenWithDeadline(cond, DeadlineFromTimeout(timeout));
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  Locked(this, __tsan_mutex_read_lock, [&] { R().reader_lock_when(this, cond); return true; });
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  bool result = false;
  Locked(this, __tsan_mutex_read_lock, [&] {
    result = R().reader_lock_when_deadline(this, cond, deadline);
    return true;
  });
  return result;
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  return ReaderLockWhenWithDeadline(cond, DeadlineFromTimeout(timeout));
}

void Mutex::Await(const Condition& cond) {
  Waited(this, [&] { R().await(this, cond); return true; });
}
bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  return Waited(this, [&] { return R().await_deadline(this, cond, deadline); });
}
bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  return AwaitWithDeadline(cond, DeadlineFromTimeout(timeout));
}

Mutex::~Mutex() {
  __tsan_mutex_destroy(this, __tsan_mutex_not_static);
  R().destroy(this);
}

void CondVar::Wait(Mutex* mu) {
  Waited(mu, [&] { R().wait(this, mu); return true; });
}
bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  return Waited(mu, [&] { return R().wait_deadline(this, mu, deadline); });
}
bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  return WaitWithDeadline(mu, DeadlineFromTimeout(timeout));
}

void Notification::Notify() {
  __tsan_release(NotifiedWord(this));
  R().notify(this);
}
void Notification::WaitForNotification() const {
  R().wait_for_notification(this);
  __tsan_acquire(NotifiedWord(this));
}
bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  const bool notified = R().wait_for_notification_deadline(this, deadline);
  if (notified) __tsan_acquire(NotifiedWord(this));
  return notified;
}
bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  return WaitForNotificationWithDeadline(DeadlineFromTimeout(timeout));
}

ABSL_NAMESPACE_END
}  // namespace absl
