// The order gRPC guarantees between a reactor's calls into gRPC and gRPC's
// calls back, told to ThreadSanitizer. Nothing in other builds.
//
// A reactor hands its state to gRPC with StartRead, StartWrite or Finish and
// gets it back in OnReadDone, OnWriteDone or OnDone, often on another thread.
// gRPC orders these through its own code (call combiners, closures, atomics
// in libgrpc), which Debian does not build with -fsanitize=thread, so TSan
// cannot see the order and reports the reactor's members (the read buffer,
// the queued responses, the whole object when OnDone deletes it) as races.
// HandOffs<Base> says what gRPC's API promises, and no more:
//   - everything before StartRead happens before the OnReadDone of that read;
//   - everything before StartWrite (any form) before the OnWriteDone of that write;
//   - everything before Finish, and every reaction (OnReadDone, OnWriteDone)
//     up to its return, before OnDone (gRPC calls OnDone last, once every
//     operation is done and every reaction has returned).
// Each edge has its own synchronisation address, so a read completing does
// not order anything with a write, and no edge covers a thread that touched
// the reactor without going through gRPC (those must take the reactor's own
// locks, which TSan sees). A reactor derives from HandOffs<grpc::Server...Reactor>
// (its StartRead, StartWrite and Finish are then these) and opens each
// callback with the matching Took...() (OnDone: TookAll()).
#ifndef ATTNROLL_SERVER_RPC_TSAN_HANDOFF_H_
#define ATTNROLL_SERVER_RPC_TSAN_HANDOFF_H_

#include <utility>

#if defined(__SANITIZE_THREAD__)
#define ATTNROLL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ATTNROLL_TSAN 1
#endif
#endif

#if defined(ATTNROLL_TSAN)
#include <sanitizer/tsan_interface.h>
// TSan's dynamic annotations (defined by its run time).
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

namespace attnroll::rpc {

// Everything this thread did so far happens before whatever follows an
// AcquireFrom(key) that comes after it (in gRPC's order).
inline void ReleaseTo(const void* key) {
#if defined(ATTNROLL_TSAN)
  __tsan_release(const_cast<void*>(key));
#else
  (void)key;
#endif
}
inline void AcquireFrom(const void* key) {
#if defined(ATTNROLL_TSAN)
  __tsan_acquire(const_cast<void*>(key));
#else
  (void)key;
#endif
}

// Runs gRPC's side of a call the project makes into gRPC (`f` must call
// nothing of the project's) with this thread's memory accesses unchecked, as
// all of gRPC's are: e.g. Finish reads the reactor's stream after the
// release to OnDone, which may already have deleted the reactor by the
// time TSan would compare the two. Synchronisation inside is still seen.
template <typename F>
void InGrpc(F&& f) {
#if defined(ATTNROLL_TSAN)
  AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
  AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  f();
  AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
  AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
#else
  f();
#endif
}

template <typename Base>
class HandOffs : public Base {
 protected:
  // A reaction (OnReadDone, OnWriteDone): it acquires its operation's edge
  // now and, at its return, releases to OnDone.
  class Reaction {
   public:
    Reaction(HandOffs* r, const void* edge) : r_(r) { AcquireFrom(edge); }
    ~Reaction() { ReleaseTo(&r_->reactions_); }
    Reaction(const Reaction&) = delete;
    Reaction& operator=(const Reaction&) = delete;

   private:
    HandOffs* r_;
  };

  template <typename... Args>
  void StartRead(Args&&... args) {
    ReleaseTo(&read_);
    InGrpc([&] { Base::StartRead(std::forward<Args>(args)...); });
  }
  template <typename... Args>
  void StartWrite(Args&&... args) {
    ReleaseTo(&write_);
    InGrpc([&] { Base::StartWrite(std::forward<Args>(args)...); });
  }
  template <typename... Args>
  void Finish(Args&&... args) {
    ReleaseTo(&finish_);
    InGrpc([&] { Base::Finish(std::forward<Args>(args)...); });
  }

  // The first line of OnReadDone / OnWriteDone.
  [[nodiscard]] Reaction TookRead() { return Reaction(this, &read_); }
  [[nodiscard]] Reaction TookWrite() { return Reaction(this, &write_); }
  // The first line of OnDone.
  void TookAll() {
    AcquireFrom(&finish_);
    AcquireFrom(&reactions_);
  }

 private:
  // Only their addresses are used (TSan's synchronisation objects).
  char read_ = 0, write_ = 0, finish_ = 0, reactions_ = 0;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_TSAN_HANDOFF_H_
