"""Blocking disk work off the reactor: run on a thread pool, results back on the reactor.

An fsync can block for as long as the disk needs to write back every dirty page
of the file (a second or more for a freshly written 1 GiB blob), and an unlink
or a rename waits on the filesystem's journal: none of it may run in the reactor
thread, where it would stall every connection. L{DiskWork} sends such calls to a
L{Pool} (in the proxy, L{ThreadedPool} over the thread pool its
C{ThreadPoolService} owns; in tests, one that runs them at once or when told)
and fires each caller's Deferred back on the reactor.

Two guarantees on top of the pool:

- calls given the same C{key} run one after another, in the order they were
  asked for (a blob's commit, touches and unlink never overtake each other, so
  an unlink queued by an eviction cannot remove the same digest committed again
  later);
- L{DiskWork.idle} fires once nothing is queued or running, including the work
  that the results of earlier work started: the cache's stop waits for it before
  the thread pool stops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

log = Logger()
T = TypeVar("T")


class Pool(Protocol):
    """Runs a blocking call somewhere other than the reactor thread."""

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """Call C{f(*args)}; the Deferred fires (in the reactor thread) with its result."""

    def report(self, f: Callable[..., object], *args: Any) -> None:
        """From a call that is running: call C{f(*args)} in the reactor thread, soon
        (in order, and before the call's own result)."""


class ThreadedPool:
    """A L{Pool} over a L{ThreadPool} someone else starts and stops (never the reactor's
    global one, whose size and lifetime the proxy does not control)."""

    def __init__(self, reactor: IReactorFromThreads, threadpool: ThreadPool) -> None:
        self.reactor = reactor
        self.threadpool = threadpool

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self.threadpool, f, *args)

    def report(self, f: Callable[..., object], *args: Any) -> None:
        self.reactor.callFromThread(f, *args)


@dataclass
class _Job:
    f: Callable[..., Any]
    args: tuple[Any, ...]
    key: Hashable | None
    result: Deferred[Any] = field(default_factory=Deferred)


class DiskWork:
    """The cache's blocking disk calls, on a L{Pool}: ordered per key, tracked until done."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._queues: dict[Hashable, deque[_Job]] = {}
        self._outstanding = 0
        self._idle: list[Deferred[None]] = []

    @property
    def outstanding(self) -> int:
        """Calls queued or running."""
        return self._outstanding

    def run(self, f: Callable[..., T], *args: Any, key: Hashable | None = None) -> Deferred[T]:
        """Call C{f(*args)} on the pool, after every earlier call with the same C{key}.

        The Deferred fires in the reactor thread with the result or the failure
        (an C{OSError} such as ENOSPC or EIO): the caller handles it.
        """
        job = _Job(f, args, key)
        self._outstanding += 1
        if key is None:
            self._start(job)
        else:
            queue = self._queues.setdefault(key, deque())
            queue.append(job)
            if len(queue) == 1:
                self._start(job)
        return job.result

    def background(
        self, what: str, f: Callable[..., object], *args: Any, key: Hashable | None = None
    ) -> None:
        """L{run}, with nobody waiting for the result: a failure is logged, naming C{what}."""
        self.run(f, *args, key=key).addErrback(
            lambda failure: log.warn(
                "blob cache: cannot {what}: {error}", what=what, error=failure.value
            )
        )

    def idle(self) -> Deferred[None]:
        """Fires once no call is queued or running (at once if none is)."""
        if not self._outstanding:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def _start(self, job: _Job) -> None:
        self.pool.run(job.f, *job.args).addBoth(self._ended, job)

    def _ended(self, outcome: object, job: _Job) -> None:
        """Hand the outcome over, then start the key's next call and count this one done.

        The caller's callbacks run first: whatever disk work they start is queued
        behind (and counted) before this call stops counting, so L{idle} never fires
        between a call and the work its result started.
        """
        if isinstance(outcome, Failure):
            job.result.errback(outcome)
        else:
            job.result.callback(outcome)
        if job.key is not None:
            queue = self._queues[job.key]
            queue.popleft()
            if queue:
                self._start(queue[0])
            else:
                del self._queues[job.key]
        self._outstanding -= 1
        if not self._outstanding:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)
