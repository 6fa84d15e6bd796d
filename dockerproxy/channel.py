"""The HTTP/1.1 edge: how much a client may send, and for how long.

Left alone, Twisted's HTTPChannel closes a connection without a word on a line
over 16 KiB, spools chunked bodies and bodies over 100 kB to a temporary file,
and runs one timer that every received byte restarts, so a header line every
20 s holds a connection for hours. L{ProxyChannel} bounds each of these and
answers every refusal with a registry JSON error and C{Connection: close}:

  - a request line over L{MAX_LINE}: 414; a header line over L{MAX_LINE}, a head
    over L{MAX_HEAD} or more than L{MAX_HEADER_LINES} header lines: 431;
  - a body over L{MAX_BODY}: 413, at once for its Content-Length, or as soon as a
    chunked one passes it. Smaller bodies stay in memory (L{BodyBuffer});
  - a request (head and body) not all received C{client_header_timeout} seconds
    after its first byte (after the accept, for a connection's first request): 408;
  - anything Twisted cannot parse: 400, where Twisted answers with no body.

A connection waiting for its next request is closed silently after
C{client_idle_timeout} (a fresh one that sends nothing, at its header deadline).
No timer runs while a response is produced: a long download is the relay's
business, with its own idle timeout. When the proxy stops, L{ProxyChannel.drain}
keeps a connection only for the response under way.

After a refusal the channel parses nothing more, half-closes a plain TCP
connection, and reads and drops what the client still sends for up to
L{LINGER} seconds: closing a socket with unread input sends a reset, which can
destroy the answer before the client reads it.

Twisted's private HTTPChannel attributes are read through L{dockerproxy.internals},
which checks them at import; this module only overrides
C{_respondToBadRequestAndDisconnect}, Twisted's hook for what it cannot parse
(L{internals.JSON_BAD_REQUEST} says whether Twisted still calls it).
"""

from __future__ import annotations

import secrets
from enum import Enum
from http import HTTPStatus
from io import BytesIO
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from dockerproxy import internals
from dockerproxy.accesslog import access_log, log_access
from dockerproxy.config import ClientLimits
from dockerproxy.errors import RegistryError

if TYPE_CHECKING:
    from dockerproxy.listeners import ConnectionLimit

MAX_LINE = 16 * 1024  # the request line, and each header line
MAX_HEAD = 64 * 1024  # request line and headers, CRLFs included
MAX_HEADER_LINES = 100
MAX_BODY = 64 * 1024  # the only body the proxy reads is the small form of POST /v2/auth
LINGER = 5.0  # seconds a refused client's further input is read and dropped

URI_TOO_LONG = RegistryError(414, "URI_TOO_LONG", f"request line over {MAX_LINE} bytes")
HEADER_LINE_TOO_LONG = RegistryError(431, "HEADERS_TOO_LARGE", f"header line over {MAX_LINE} bytes")
HEAD_TOO_LARGE = RegistryError(431, "HEADERS_TOO_LARGE", f"request head over {MAX_HEAD} bytes")
TOO_MANY_HEADERS = RegistryError(
    431, "HEADERS_TOO_LARGE", f"more than {MAX_HEADER_LINES} header lines"
)
BODY_TOO_LARGE = RegistryError(
    413, "BODY_TOO_LARGE", f"this proxy takes no request body over {MAX_BODY} bytes"
)
BAD_REQUEST = RegistryError(400, "INVALID_REQUEST", "malformed HTTP request")

TLS_HANDSHAKE = 0x16
NOT_TLS_RESPONSE = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\n\r\nThis port speaks plain HTTP, not TLS.\n"
)


def request_timeout(seconds: float) -> RegistryError:
    return RegistryError(
        408, "REQUEST_TIMEOUT", f"the request was not all received within {seconds:g} seconds"
    )


def error_response(error: RegistryError, head_only: bool = False, request_id: str = "") -> bytes:
    """A whole response for C{error}, for a request no resource will see."""
    body = error.body()
    head = (
        b"HTTP/1.1 %d %s\r\n" % (error.status, HTTPStatus(error.status).phrase.encode())
        + b"Content-Type: application/json; charset=utf-8\r\n"
        + b"Docker-Distribution-Api-Version: registry/2.0\r\n"
        + (b"X-Request-Id: %s\r\n" % request_id.encode("ascii") if request_id else b"")
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    return head if head_only else head + body


class BodyBuffer(BytesIO):
    """A request body, in memory and never over L{MAX_BODY}: a write past it is
    dropped and remembered, for the channel to answer 413."""

    overflowed = False

    def write(self, data: bytes, /) -> int:  # type: ignore[override]
        if self.overflowed or self.tell() + len(data) > MAX_BODY:
            self.overflowed = True
            return 0
        return super().write(data)


class Phase(Enum):
    """Where a connection is; each phase has at most one timer (see _timed_out)."""

    WAITING = "waiting for a request"
    RECEIVING = "receiving a request"
    RESPONDING = "responding"
    CLOSING = "closing"


class ProxyChannel(HTTPChannel):
    """HTTP/1.1 with bounded requests and deadlines (see the module docstring).

    It also answers a TLS ClientHello on a plain port at once: Docker clients
    try HTTPS first even for an "insecure" registry and fall back to HTTP when
    the answer is not TLS; without an answer they wait out a 10 s handshake
    timeout on every pull.
    """

    MAX_LENGTH = MAX_LINE  # LineReceiver hands a longer line to lineLengthExceeded
    # Twisted's own head checks (a bare 400) stay as a backstop behind ours, which
    # count CRLFs too and so always decide first.
    totalHeadersSize = MAX_HEAD
    maxHeaders = MAX_HEADER_LINES

    # Given by the site before the connection starts (ProxySite.buildProtocol).
    clock: IReactorTime
    limits = ClientLimits()
    connections: ConnectionLimit | None = None
    access_log: Logger = access_log

    _phase = Phase.WAITING
    _timer: IDelayedCall | None = None
    _served = 0  # requests answered on this connection
    _started = 0.0  # when the request being received began
    _head_size = 0
    _head_lines = 0
    _admitted = False
    _first = True
    _draining = False

    @property
    def connection(self) -> ITCPTransport:
        """The client connection (TCP, or TLS over it): set before any data arrives."""
        return cast(ITCPTransport, self.transport)

    def connectionMade(self) -> None:
        if self.connections is not None and not self.connections.admit(self):
            # Accepted past the bound in one accept batch (see ConnectionLimit).
            self._phase = Phase.CLOSING
            self.connection.abortConnection()
            return
        self._admitted = True
        super().connectionMade()
        self._set_timer(self.limits.client_header_timeout)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._phase = Phase.CLOSING
        self._set_timer(None)
        super().connectionLost(reason)
        if self._admitted and self.connections is not None:
            self._admitted = False
            self.connections.release(self)

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        if self._phase is Phase.CLOSING:
            return  # lingering after a refusal: read and drop
        if self._first and data:
            self._first = False
            if data[0] == TLS_HANDSHAKE:
                self._phase = Phase.CLOSING
                self.connection.write(NOT_TLS_RESPONSE)
                self.connection.loseConnection()
                return
        if data and self._phase is Phase.WAITING:
            self._begin_request()
        super().dataReceived(data)
        if self._phase is Phase.WAITING and internals.has_buffered_input(self):
            # A response given at once left the next pipelined request's first
            # bytes, not yet a line, in LineReceiver's buffer.
            self._begin_request()

    def lineReceived(self, line: bytes) -> None:
        if self._phase is Phase.CLOSING:
            return
        if self._phase is Phase.WAITING:
            self._begin_request()
        self._head_size += len(line) + len(self.delimiter)
        if line:
            self._head_lines += 1
        if self._head_size > MAX_HEAD:
            self._refuse(HEAD_TOO_LARGE)
        elif self._head_lines > MAX_HEADER_LINES + 1:  # the request line is not a header
            self._refuse(TOO_MANY_HEADERS)
        else:
            super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._phase is Phase.WAITING:
            self._begin_request()
        self._refuse(URI_TOO_LONG if self._head_lines == 0 else HEADER_LINE_TOO_LONG)

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > MAX_BODY:
            self._refuse(BODY_TOO_LARGE)  # before any body byte, and before a 100 Continue
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self._phase is Phase.CLOSING:
            return
        super().rawDataReceived(data)
        if self._phase is Phase.RECEIVING and self._body_overflowed():
            self._refuse(BODY_TOO_LARGE)  # a chunked body, as soon as it is too large

    def allContentReceived(self) -> None:
        if self._phase is Phase.CLOSING:
            return
        if self._body_overflowed():
            self._refuse(BODY_TOO_LARGE)
            return
        self._phase = Phase.RESPONDING
        self._set_timer(None)  # a response takes as long as it takes
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        self._served += 1
        self._phase = Phase.WAITING
        self._set_timer(self.limits.client_idle_timeout)
        super().requestDone(request)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's bare 400 for what it cannot parse, as a registry JSON error."""
        self._refuse(BAD_REQUEST)

    def _begin_request(self) -> None:
        self._phase = Phase.RECEIVING
        self._started = self.clock.seconds()
        self._head_size = self._head_lines = 0
        if self._served:
            # On a kept-alive connection the deadline runs from this request's first
            # byte; a fresh connection keeps the one set when it was accepted.
            self._set_timer(self.limits.client_header_timeout)

    def _body_overflowed(self) -> bool:
        content = getattr(self.requests[-1], "content", None) if self.requests else None
        return isinstance(content, BodyBuffer) and content.overflowed

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        """No next request on a connection being drained: say so in the response."""
        if self._draining:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def hand_over(self) -> bool:
        """Let another protocol (HTTP/2, L{dockerproxy.http2}) take this connection before
        its first byte is parsed: this channel stops its timer and stops consuming the
        transport. C{False} if it was not admitted (it is closing the connection)."""
        if not self._admitted or self._phase is Phase.CLOSING:
            return False
        self._admitted = False  # its slot goes to the next protocol (ConnectionLimit.replace)
        self._phase = Phase.CLOSING
        self._set_timer(None)
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        return True

    # -- closing

    def drain(self, close_fresh: bool) -> None:
        """The proxy is stopping: keep this connection only for the response under way.

        A connection waiting for its next request closes now; one receiving or
        answering a request closes after that response, which says
        C{Connection: close} if its headers are not sent yet. A fresh connection
        that has sent nothing closes only with C{close_fresh}: it may have been
        accepted just before the listeners stopped, its request not read yet.
        """
        self._draining = True
        if self._phase is Phase.WAITING:
            if self._served or close_fresh:
                self._close_idle()
        elif self._phase is not Phase.CLOSING:
            self.persistent = False
            for request in self.requests:
                if not request.startedWriting:
                    request.responseHeaders.setRawHeaders(b"connection", [b"close"])

    def _refuse(self, error: RegistryError) -> None:
        """Answer C{error} for the request being received, then linger and close."""
        if self._phase is Phase.CLOSING:
            return
        self._phase = Phase.CLOSING
        method, path = internals.request_line(self)
        head_only = method.upper() == b"HEAD"
        request_id = secrets.token_hex(8)
        self.connection.write(error_response(error, head_only, request_id))
        self.clearLineBuffer()
        log_access(
            getattr(self.connection.getPeer(), "host", "-"),
            method,
            path,
            error.status,
            0 if head_only else len(error.body()),
            self.clock.seconds() - self._started,
            request_id=request_id,
            refusal=error.code.lower(),
            logger=self.access_log,
        )
        internals.stop_reading_requests(self)
        transport = self.transport
        if ITCPTransport.providedBy(transport) and not ISSLTransport.providedBy(transport):
            transport.loseWriteConnection()  # a FIN after the answer; reading goes on
        self._set_timer(LINGER)

    def _close_idle(self) -> None:
        """Close a connection that waited too long for a request, silently; abort it
        if its client has not taken the end of a response one more idle timeout later."""
        self._phase = Phase.CLOSING
        self._set_timer(self.limits.client_idle_timeout)
        if not getattr(self.transport, "disconnecting", True):
            self.loseConnection()

    def _timed_out(self) -> None:
        self._timer = None
        if self._phase is Phase.RECEIVING:
            self._refuse(request_timeout(self.limits.client_header_timeout))
        elif self._phase is Phase.WAITING:
            self._close_idle()
        elif self._phase is Phase.CLOSING:
            self.connection.abortConnection()

    def _set_timer(self, seconds: float | None) -> None:
        """Replace this connection's one timer (None: no timer)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None if seconds is None else self.clock.callLater(seconds, self._timed_out)
