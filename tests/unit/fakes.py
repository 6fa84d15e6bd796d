"""Fakes shared by the relay and blob-cache unit tests, the disk pools of the cache, and a
log capture."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from dockerproxy.cache.diskio import DiskWork

T = TypeVar("T")


@implementer(IResponse)
class FakeResponse:
    """An upstream response whose body arrives over C{transport}, fed by the test."""

    version = (b"HTTP", 1, 1)
    phrase = b"OK"
    request = None
    previousResponse = None

    def __init__(self, length: int | object, transport: StringTransport, code: int = 200) -> None:
        self.code = code
        self.headers = Headers()
        self.length = length
        self.transport = transport
        self.protocol: IProtocol | None = None

    def deliverBody(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response


class ClientTransport(StringTransport):
    """The client's socket: records abortConnection apart from loseConnection and the size of
    each write; with C{buffer_size}, it pauses its producer as TCP would."""

    aborted = False

    def __init__(self, buffer_size: int | None = None) -> None:
        super().__init__()
        self.buffer_size = buffer_size
        self.unsent = 0
        self.paused_producer = False
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(len(data))
        self.unsent += len(data)
        if (
            self.buffer_size is not None
            and self.producer is not None
            and not self.paused_producer
            and self.unsent > self.buffer_size
        ):
            self.paused_producer = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The kernel took everything: resume the producer, as a TCP transport does."""
        self.unsent = 0
        if self.paused_producer:
            self.paused_producer = False
            self.producer.resumeProducing()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Capture(Resource):
    """Keeps every request it is asked to render, and answers none of them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        return NOT_DONE_YET


def lost(*reasons: BaseException) -> Failure:
    """How twisted.web.client reports a body cut short: ResponseFailed around the cause."""
    return Failure(ResponseFailed([Failure(r) for r in reasons or (ConnectionLost(),)]))


def scratch_dir(case: SynchronousTestCase) -> Path:
    """A fresh temporary directory removed after the test (trial's mktemp() would
    create it under the current directory, the checkout)."""
    path = Path(tempfile.mkdtemp(prefix="dockerproxy-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


# --------------------------------------------------------------------------- disk pools


class SyncPool:
    """A disk pool that runs each call at once, in the caller's thread: the cache behaves
    as if its disk work were inline, and tests stay deterministic."""

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return maybeDeferred(f, *args)

    def report(self, f: Callable[..., object], *args: Any) -> None:
        f(*args)


def sync_disk() -> DiskWork:
    """The cache's disk work on a L{SyncPool}."""
    return DiskWork(SyncPool())


class ManualPool:
    """A disk pool that runs nothing until the test says so: C{calls} are the calls asked
    for and not yet run, oldest first, as (function, arguments)."""

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    @property
    def calls(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        return [(f, args) for f, args, _ in self._pending]

    def names(self) -> list[str]:
        """The pending calls' function names (e.g. C{commit}, C{touch}), oldest first."""
        return [f.__name__ for f, _, _ in self._pending]

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._pending.append((f, args, d))
        return d

    def report(self, f: Callable[..., object], *args: Any) -> None:
        """What a running call hands to the reactor arrives at once."""
        f(*args)

    def complete(self, index: int = 0) -> None:
        """Run the pending call at C{index} now and fire its Deferred."""
        self.run_now(index)()

    def run_now(self, index: int = 0) -> Callable[[], None]:
        """Run the pending call at C{index} now, as its thread would, and return what hands
        its outcome back, as the reactor would a moment later."""
        f, args, d = self._pending.pop(index)
        outcome = maybeDeferred(f, *args)

        def hand_back() -> None:
            outcome.chainDeferred(d)

        return hand_back

    def complete_all(self) -> None:
        """Run the pending calls, and the ones they lead to, until none is left."""
        while self._pending:
            self.complete()


class InlineThreadPool(ThreadPool):
    """A ThreadPool (started, stopped, joined like one) that runs each call in the caller's
    thread; C{called} names the functions it ran. With a reactor whose C{callFromThread}
    calls at once (L{InlineThreadsReactor}), deferToThreadPool over it fires before it returns."""

    def __init__(self) -> None:
        super().__init__(minthreads=0, maxthreads=1, name="inline")
        self.called: list[str] = []

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object],
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        self.called.append(getattr(func, "__name__", repr(func)))
        try:
            result = func(*args, **kw)
        except Exception:
            onResult(False, Failure())
        else:
            onResult(True, result)


class InlineThreadsReactor(MemoryReactorClock):
    """A MemoryReactorClock whose C{callFromThread} calls at once (with an
    L{InlineThreadPool}, the "thread" is the reactor's own)."""

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


# --------------------------------------------------------------------------- logs


def lines_logged(case: SynchronousTestCase) -> list[str]:
    """The text of every event logged from now until the test ends."""
    seen: list[str] = []

    def observe(event: LogEvent) -> None:
        seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return seen
