"""Builds a pass's next layer message on a background thread while gRPC's
thread sends the current one.

grpcio's client-streaming call pulls each request from its iterator on one
thread and waits until the message is written before pulling the next, so
checking and fusing a layer in the iterator leaves the socket idle meanwhile.
numpy releases the GIL inside its reductions, so a second thread can check
and fuse layer l + 1 while layer l is serialized and written: the pass then
takes about max(fusion, sending) per layer instead of their sum.
"""

import concurrent.futures
import os
import threading
from typing import Callable, Dict, Optional


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on (a container's share)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Builder:
    """A small pool of threads shared by one Client's calls (created on first
    use; as many as the CPUs this process may use, at most 4). A streamed
    call has at most one message being built at a time (Ahead), so its
    builds run one after the other and may share scratch buffers; a whole
    pass (whole_pass.serialize) fuses on this pool and on the calling thread
    at once, each with scratch buffers of its own."""

    def __init__(self, threads: Optional[int] = None):
        self._threads = threads or min(4, _usable_cpus())
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._lock = threading.Lock()

    @property
    def threads(self) -> int:
        return self._threads

    def ahead(self, build: Callable[[int], object], count: int) -> "Ahead":
        """Starts build(0) now; see Ahead."""
        return Ahead(self._get_pool(), build, count)

    def submit(self, fn: Callable, *args) -> concurrent.futures.Future:
        """fn(*args) on one of the threads."""
        return self._get_pool().submit(fn, *args)

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._threads, thread_name_prefix="attnroll-build")
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class Ahead:
    """build(0), ..., build(count - 1), each started as soon as the one
    before it is taken: result(l) returns build(l) (or raises what it
    raised) and starts build(l + 1)."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor,
                 build: Callable[[int], object], count: int):
        self._pool, self._build, self._count = pool, build, count
        self._futures: Dict[int, concurrent.futures.Future] = {}
        self._start(0)

    def _start(self, l: int) -> None:
        if l < self._count and l not in self._futures:
            self._futures[l] = self._pool.submit(self._build, l)

    def result(self, l: int) -> object:
        self._start(l)
        value = self._futures.pop(l).result()
        self._start(l + 1)
        return value

    def cancel(self) -> None:
        """Drops a build not yet started (one already running finishes)."""
        for f in self._futures.values():
            f.cancel()
        self._futures.clear()
