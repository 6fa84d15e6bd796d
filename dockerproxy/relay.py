"""Stream an upstream response body to a client with backpressure.

The upstream connection is registered as the streaming producer of the client
request: when the client's socket buffer fills, Twisted pauses the upstream
socket, so memory stays flat whatever the body size. A body that ends early
aborts the client connection, because finishing it would tell the client a
truncated blob was complete.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable
from typing import cast

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

from dockerproxy import internals
from dockerproxy.shaping import allowance

log = Logger()

# Bytes read from the upstream socket per recv(), chosen before each read from the
# room in the client's kernel send buffer, so what is read goes out at the next
# send(). A client that keeps up gets READ_MAX reads, each sent in one send() from
# one reused buffer instead of Twisted's 64 KiB reads and 128 KiB sends
# (bench/throughput.py: from 0.53 to 0.92-0.95 of a tuned nginx; fixed 256 KiB
# reads cost 1.5 times the CPU). While the client's socket takes nothing, nothing
# is read: a client that stops reading holds no body in the proxy instead of a
# megabyte, and what it has not taken waits in the upstream socket. READ_MIN is
# the least read when the room is small. The client's 64 KiB pause threshold is
# kept on purpose: the upstream pauses as soon as a chunk is queued, so buffers
# are never joined (an extra copy).
READ_MAX = 1024 * 1024
READ_MIN = 128 * 1024
# The read size where the client's room cannot be read (not Linux, not a socket).
READ_BLIND = 256 * 1024
# Linux's getsockopt(SOL_SOCKET, SO_MEMINFO): u32 counters, sndbuf and wmem_queued
# (what the queued packets cost) among them; not in Python's socket module.
SO_MEMINFO = 55
MEMINFO_SNDBUF = 3
MEMINFO_WMEM_QUEUED = 5


@implementer(IPushProducer)
class BodyRelay(Protocol):
    """Copies one upstream body into a client request, then finishes or aborts it.

    It is the client request's producer, passing pauses on to the upstream
    socket, so it knows whether a stall is the client's or the upstream's.
    """

    def __init__(
        self, request: Request, length: int | object, clock: IReactorTime, idle_timeout: float
    ) -> None:
        self.request = request
        self.length = length
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.done: Deferred[bool] = Deferred()
        self.received = 0
        self._idle: IDelayedCall | None = None
        self._failed_reason: str | None = None
        self._client_paused = False
        self._upstream_reads: object | None = None
        self._client: object | None = None
        self._client_socket: socket.socket | None = None

    def connectionMade(self) -> None:
        self._upstream_reads = internals.upstream_tcp(self.transport)
        self._client = client_connection(self.request.transport)
        if self._client is not None:
            self._client_socket = self._client.getHandle()  # type: ignore[attr-defined]
        internals.enlarge_sends(self._client, READ_MAX)
        self.request.registerProducer(self, True)
        self._size_next_read(self._client_room())
        self._arm_idle_timer()

    def pauseProducing(self) -> None:
        self._client_paused = True
        body_transport(self).pauseProducing()

    def resumeProducing(self) -> None:
        """The client took everything queued: read as much as its socket takes now,
        or, if it takes nothing until the kernel reports it writable, read then."""
        self._client_paused = False
        if self._idle is not None:
            self._idle.reset(self.idle_timeout)
        room = self._client_room()
        if room == 0 and internals.pause_until_writable(self._client):
            return  # paused again; the client's transport resumes this relay when writable
        self._size_next_read(room)
        body_transport(self).resumeProducing()

    def stopProducing(self) -> None:
        self.stop("client connection closed")

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self._idle is not None:
            self._idle.reset(self.idle_timeout)
        self.request.write(data)

    def _client_room(self) -> int | None:
        return None if self._client_socket is None else send_room(self._client_socket)

    def _size_next_read(self, room: int | None) -> None:
        """Read no more than the client can take now, nor than its bandwidth budget
        allows (see L{dockerproxy.shaping}): the rest waits in the kernel."""
        if self._upstream_reads is not None:
            size = read_size(room)
            shaped = allowance(self.request)
            if shaped is not None:
                size = min(size, shaped)
            internals.set_read_size(self._upstream_reads, size)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self._upstream_reads = self._client = self._client_socket = None
        if self.request.producer is self:
            if self.request.channel is not None:
                self.request.unregisterProducer()
            else:  # the client is gone: Request.connectionLost dropped the channel
                self.request.producer = None
        complete = self._is_complete(reason)
        if complete:
            if not self.request.finished and not client_gone(self.request):
                self.request.finish()
        else:
            log.warn(
                "upstream body ended early after {received} bytes: {why}",
                received=self.received,
                why=self._failed_reason or reason.getErrorMessage(),
            )
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
            body_transport(self).stopProducing()

    def _arm_idle_timer(self) -> None:
        self._idle = self.clock.callLater(self.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        if self._client_paused:
            self.stop(f"the client read nothing for {self.idle_timeout:g} seconds")
        else:
            self.stop(f"the upstream sent nothing for {self.idle_timeout:g} seconds")


def body_transport(protocol: Protocol) -> IPushProducer:
    """The transport a response body is delivered over: twisted.web.client pauses,
    resumes and stops the connection through it (an L{IPushProducer})."""
    return cast(IPushProducer, protocol.transport)


def relay_body(
    response: IResponse, request: Request, clock: IReactorTime, idle_timeout: float
) -> BodyRelay:
    """Start relaying C{response}'s body; stop the relay if the client goes away."""
    relay = BodyRelay(request, response.length, clock, idle_timeout)
    response.deliverBody(relay)
    request.notifyFinish().addErrback(lambda _: relay.stop("client disconnected"))
    return relay


def abort_client(request: Request) -> None:
    """Drop the client connection so a partial body can never look complete (under
    HTTP/2, where a request has no transport of its own, reset its stream)."""
    transport = request.transport if request.transport is not None else request.channel
    if transport is None or client_gone(request):
        return
    abort: Callable[[], object] | None = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def read_size(room: int | None) -> int:
    """Bytes to read from upstream for a client whose socket would take C{room} now."""
    if room is None:
        return READ_BLIND
    return max(READ_MIN, min(READ_MAX, room))


def send_room(sock: socket.socket) -> int | None:
    """Bytes of payload C{sock}'s kernel send buffer surely takes now (L{payload_room});
    C{None} where Linux cannot say."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (MEMINFO_WMEM_QUEUED + 1))
        counters = struct.unpack_from(f"{MEMINFO_WMEM_QUEUED + 1}I", info)
    except (OSError, struct.error):
        return None
    return payload_room(counters[MEMINFO_SNDBUF], counters[MEMINFO_WMEM_QUEUED])


def payload_room(sndbuf: int, queued: int) -> int:
    """Payload bytes a send buffer of C{sndbuf} surely takes now with C{queued} in it,
    both as the kernel counts them (what packets cost, not their payload).

    The kernel reports a socket writable only once its free space is half of what is
    queued, and Twisted sends only then: below that, nothing would go out. Packets
    cost more than their payload, most for a stalled client whose small window makes
    small packets (1.4 times on loopback): half the free space surely fits.
    """
    free = sndbuf - queued
    return 0 if free < queued // 2 else free // 2


def client_connection(transport: object) -> object | None:
    """The TCP transport beneath a client's transport, whose socket sends: the
    transport itself, or the one under TLS (whose getHandle() is the TLS connection)."""
    for _ in range(3):
        get_handle = getattr(transport, "getHandle", None)
        if get_handle is not None and isinstance(get_handle(), socket.socket):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def enlarge_socket_reads(body_transport: object) -> None:
    """Read up to L{READ_MAX} per recv() from the TCP connection under an upstream
    body (a cache fill, which never waits for a client)."""
    tcp = internals.upstream_tcp(body_transport)
    if tcp is not None:
        internals.set_read_size(tcp, max(internals.read_size(tcp), READ_MAX))


def client_gone(request: Request) -> bool:
    """Whether C{request} can no longer be answered: its connection was lost (or it
    was finished and cleaned up).

    Twisted drops a request's (documented) C{channel} when its connection is lost
    and deletes it once a finished request is done with; C{notifyFinish} tells of a
    loss to come, never of one that already happened.
    """
    return getattr(request, "channel", None) is None


class Discard(Protocol):
    """Reads and drops a small body (a redirect's), aborting past C{limit} bytes."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.limit -= len(data)
        if self.limit < 0 and self.transport is not None:
            body_transport(self).stopProducing()

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

    def __init__(
        self, limit: int, clock: IReactorTime | None = None, idle_timeout: float = 60.0
    ) -> None:
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
            body_transport(self).stopProducing()
