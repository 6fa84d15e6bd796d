"""Stream an upstream response body to a client with backpressure.

The upstream connection is registered as the streaming producer of the client
request: when the client's socket buffer fills, Twisted pauses the upstream
socket, so memory stays flat whatever the body size. A body that ends early
aborts the client connection, because finishing it would tell the client a
truncated blob was complete.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.server import Request
from zope.interface import implementer

log = Logger()

# Bytes read from the upstream socket per call, and the most sent to the client in
# one send(): one 1 MiB buffer per step instead of Twisted's 64 KiB reads and
# 128 KiB sends. The client's 64 KiB pause threshold is kept on purpose: the
# upstream pauses as soon as a chunk is queued, so buffers are never joined
# (an extra copy) and one live buffer is reused (no page-fault churn).
# bench/throughput.py measured this at 0.92-0.95 of a tuned nginx.
SOCKET_CHUNK = 1024 * 1024


@implementer(IPushProducer)
class BodyRelay(Protocol):
    """Copies one upstream body into a client request, then finishes or aborts it.

    It is the client request's producer, passing pauses on to the upstream
    socket, so it knows whether a stall is the client's or the upstream's.
    """

    def __init__(self, request: Request, length: int | object, clock: IReactorTime,
                 idle_timeout: float) -> None:
        self.request = request
        self.length = length
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.done: Deferred[bool] = Deferred()
        self.received = 0
        self._idle: IDelayedCall | None = None
        self._failed_reason: str | None = None
        self._client_paused = False

    def connectionMade(self) -> None:
        enlarge_socket_reads(getattr(self.transport, "_producer", None))
        client = self.request.transport
        if client is not None and hasattr(client, "SEND_LIMIT"):
            client.SEND_LIMIT = max(client.SEND_LIMIT, SOCKET_CHUNK)
        self.request.registerProducer(self, True)
        self._arm_idle_timer()

    def pauseProducing(self) -> None:
        self._client_paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._client_paused = False
        if self._idle is not None:
            self._idle.reset(self.idle_timeout)
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.stop("client connection closed")

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self._idle is not None:
            self._idle.reset(self.idle_timeout)
        self.request.write(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self.request.producer is self:
            if self.request.channel is not None:
                self.request.unregisterProducer()
            else:  # the client is gone: Request.connectionLost dropped the channel
                self.request.producer = None
        complete = self._is_complete(reason)
        if complete:
            if not self.request.finished and not getattr(self.request, "_disconnected", False):
                self.request.finish()
        else:
            log.warn("upstream body ended early after {received} bytes: {why}",
                     received=self.received, why=self._failed_reason or reason.getErrorMessage())
            abort_client(self.request)
        self.done.callback(complete)

    def _is_complete(self, reason: Failure) -> bool:
        if self._failed_reason is not None:
            return False
        if reason.check(ResponseDone):
            return self.length is UNKNOWN_LENGTH or self.received == self.length
        # A close-delimited body (no length, no chunking) ends with PotentialDataLoss.
        return bool(reason.check(PotentialDataLoss)) and self.length is UNKNOWN_LENGTH

    def stop(self, why: str) -> None:
        """Abandon the upstream body: its connection is closed, never pooled half read."""
        if self._failed_reason is None:
            self._failed_reason = why
        if self.transport is not None:
            self.transport.stopProducing()

    def _arm_idle_timer(self) -> None:
        self._idle = self.clock.callLater(self.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        if self._client_paused:
            self.stop(f"the client read nothing for {self.idle_timeout:g} seconds")
        else:
            self.stop(f"the upstream sent nothing for {self.idle_timeout:g} seconds")


def relay_body(response: IResponse, request: Request, clock: IReactorTime,
               idle_timeout: float) -> BodyRelay:
    """Start relaying C{response}'s body; stop the relay if the client goes away."""
    relay = BodyRelay(request, response.length, clock, idle_timeout)
    response.deliverBody(relay)
    request.notifyFinish().addErrback(lambda _: relay.stop("client disconnected"))
    return relay


def abort_client(request: Request) -> None:
    """Drop the client connection so a partial body can never look complete."""
    transport = request.transport
    if transport is None or getattr(request, "_disconnected", False):
        return
    abort: Callable[[], object] | None = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def enlarge_socket_reads(transport: object) -> None:
    """Read up to L{SOCKET_CHUNK} per recv() from an upstream socket.

    bufferSize is also the transport's pause threshold for writes: raise it only
    on the upstream side, never on a client's.
    """
    if transport is not None and hasattr(transport, "bufferSize"):
        transport.bufferSize = max(transport.bufferSize, SOCKET_CHUNK)  # type: ignore[attr-defined]


class Discard(Protocol):
    """Reads and drops a small body (a redirect's), aborting past C{limit} bytes."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.limit -= len(data)
        if self.limit < 0 and self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self.done.callback(None)


async def discard(response: IResponse) -> None:
    """Read and drop a response's (small) body, so its connection can be reused."""
    sink = Discard()
    response.deliverBody(sink)
    await sink.done


class BodyStalled(Exception):
    """A small body sent nothing for longer than its idle timeout."""


class Collect(Protocol):
    """Buffers a small body (a token, a manifest, a tag list), failing past C{limit} bytes
    or, with a C{clock}, when it sends nothing for C{idle_timeout} seconds."""

    def __init__(self, limit: int, clock: IReactorTime | None = None,
                 idle_timeout: float = 60.0) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred()
        self._too_large = False
        self._stalled = False
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        if self._clock is not None:
            self._idle = self._clock.callLater(self._idle_timeout, self._idle_expired)

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.reset(self._idle_timeout)
        self.size += len(data)
        if self.size > self.limit:
            self._too_large = True
            self._stop()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self._stalled:
            self.done.errback(BodyStalled(f"no body bytes for {self._idle_timeout:g} seconds"))
        elif self._too_large:
            self.done.errback(ValueError(f"body larger than {self.limit} bytes"))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)

    def _idle_expired(self) -> None:
        self._idle = None
        self._stalled = True
        self._stop()

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()
