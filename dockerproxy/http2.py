"""HTTP/2 on the C{ssl:} listeners, offered by ALPN with C{--http2}, bounded like HTTP/1.1.

Twisted's own switch (C{_GenericHTTPChannelProtocol}) would hand an h2
connection to a bare C{H2Connection}: no deadline but a 60 s idle timer that
any frame restarts, no bound on request heads but hpack's, bodies spooled, and
each stream's response queued up to the client's flow-control window, which a
client may open to 2 GiB and then not read. Here L{NegotiatedChannel} starts
every connection as a L{ProxyChannel} and, when TLS negotiated C{h2}, hands it
to a L{ProxyH2Connection} before its first byte is parsed. That connection:

  - takes at most L{MAX_STREAMS} streams at once (the SETTINGS it sends; a
    client that opens more gets a GOAWAY from h2) and request heads of at most
    L{MAX_HEAD} bytes (hpack's own cap, the same number; past it, a GOAWAY);
  - answers as L{ProxyChannel} does: a C{:path} over L{MAX_LINE} is a 414, a
    header over L{MAX_LINE} or more than L{MAX_HEADER_LINES} a 431, a body over
    L{MAX_BODY} a 413 (for its C{content-length}, or as soon as it passes the
    bound: then the stream is reset), a request not all received within
    C{client_header_timeout} a 408; then RST_STREAM(NO_ERROR), so the client
    stops sending it. h2 ends a connection whose C{host} header disagrees with
    C{:authority} (a GOAWAY); with both equal the duplicate is dropped, so the
    edge reads one Host, as over HTTP/1.1;
  - holds at most L{STREAM_QUEUE} response bytes per stream whatever the
    client's window: a stream's producer (the relay, a cache sender) is paused
    past it and resumed as the queue drains, as HTTP/1.1's socket buffer does;
  - closes with a GOAWAY after C{client_idle_timeout} with no stream open (the
    first request must come within C{client_header_timeout}); frames do not
    restart that timer, streams do;
  - counts once against C{--max-connections}, and drains on a stop: a GOAWAY
    that lets the streams under way finish, then the close.

Twisted's private H2Connection methods overridden here are checked at import
by L{dockerproxy.internals} (L{internals.H2_HOOKS}); without them h2 is not offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection

from dockerproxy import internals
from dockerproxy.accesslog import access_log, log_access
from dockerproxy.channel import (
    BODY_TOO_LARGE,
    HEADER_LINE_TOO_LONG,
    MAX_BODY,
    MAX_HEAD,
    MAX_HEADER_LINES,
    MAX_LINE,
    TOO_MANY_HEADERS,
    URI_TOO_LONG,
    ProxyChannel,
    request_timeout,
)
from dockerproxy.config import ClientLimits
from dockerproxy.errors import RegistryError

if TYPE_CHECKING:
    from dockerproxy.listeners import ConnectionLimit


H2 = b"h2"
MAX_STREAMS = 32
# Response bytes queued per stream before its producer pauses (a relay reads 256 KiB
# at a time where it cannot see the client's socket, so a stream holds at most about
# this plus one read).
STREAM_QUEUE = 256 * 1024


class ProxyH2Connection(H2Connection):
    """Twisted's HTTP/2 connection with the proxy's bounds (see the module docstring)."""

    requestFactory: Any  # set as a Site sets its channels' (NegotiatedChannel)

    def __init__(
        self,
        clock: IReactorTime,
        limits: ClientLimits,
        connections: ConnectionLimit | None = None,
        access_log: Logger = access_log,
    ) -> None:
        super().__init__(clock)
        self.clock = clock
        self.limits = limits
        self.connections = connections
        self.access_log = access_log
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEAD,
            },
        )
        self._timer: IDelayedCall | None = None
        self._deadlines: dict[int, IDelayedCall] = {}
        self._queue_blocked: set[int] = set()
        self._served = 0
        self._draining = False
        self._closing = False

    # -- the connection

    def connectionMade(self) -> None:
        super().connectionMade()
        self._set_timer(self.limits.client_header_timeout)

    def connectionLost(self, reason: Failure, **kwargs: Any) -> None:  # type: ignore[override]
        super().connectionLost(reason, **kwargs)
        self._closing = True
        for deadline in self._deadlines.values():
            if deadline.active():
                deadline.cancel()
        self._deadlines.clear()
        if internals.h2_connection_closed(kwargs):
            self._set_timer(None)
        elif self._timer is None:
            # A GOAWAY sent or received: the socket closes once the client reads what is
            # left, or is aborted an idle timeout later.
            self._set_timer(self.limits.client_idle_timeout)

    def drain(self, close_fresh: bool) -> None:
        """The proxy is stopping: a GOAWAY, the streams under way finish, then the close.

        The GOAWAY is written as a frame of its own: h2's state machine, once told,
        takes no further frame (not even the WINDOW_UPDATEs a download needs)."""
        if self._closing:
            return
        if not self._draining:
            self._draining = True
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.conn.highest_inbound_stream_id
            frame.error_code = h2.errors.ErrorCodes.NO_ERROR
            self.transport.write(frame.serialize())  # type: ignore[union-attr]
        if not self.streams and (self._served or close_fresh):
            self._close_idle()

    def _close_idle(self) -> None:
        """Close a connection with no stream open: a GOAWAY, then the close; abort it if
        the client has not let go one more idle timeout later."""
        self._closing = True
        self._set_timer(self.limits.client_idle_timeout)
        if not self._draining:
            self.conn.close_connection()
            if not internals.h2_flush(self):
                return
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _timed_out(self) -> None:
        self._timer = None
        if self._closing:
            self.transport.abortConnection()  # type: ignore[union-attr]
        elif not self.streams:
            self._close_idle()

    def _set_timer(self, seconds: float | None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None if seconds is None else self.clock.callLater(seconds, self._timed_out)

    # -- streams (Twisted's private hooks, see internals.H2_HOOKS)

    def _requestReceived(self, event: h2.events.RequestReceived) -> None:
        if self._draining:
            self.conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            internals.h2_flush(self)
            return
        headers, error = checked_headers(event.headers)
        if error is not None:  # no Twisted stream: it would parse what was refused
            self._refuse(event.stream_id, error, dict(headers))
            return
        self._set_timer(None)
        event.headers = headers
        super()._requestReceived(event)
        if not event.stream_ended:
            self._deadlines[event.stream_id] = self.clock.callLater(
                self.limits.client_header_timeout, self._request_late, event.stream_id
            )

    def _requestDataReceived(self, event: h2.events.DataReceived) -> None:
        if event.stream_id not in self.streams:
            return  # refused while the client was still sending
        super()._requestDataReceived(event)
        if self._body_overflowed(event.stream_id):
            self._refuse(event.stream_id, BODY_TOO_LARGE)

    def _requestEnded(self, event: h2.events.StreamEnded) -> None:
        deadline = self._deadlines.pop(event.stream_id, None)
        if deadline is not None and deadline.active():
            deadline.cancel()
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestDone(self, streamID: int) -> None:
        super()._requestDone(streamID)
        self._served += 1
        self._queue_blocked.discard(streamID)
        deadline = self._deadlines.pop(streamID, None)
        if deadline is not None and deadline.active():
            deadline.cancel()
        if not self.streams and not self._closing:
            if self._draining:
                self._close_idle()
            else:
                self._set_timer(self.limits.client_idle_timeout)

    def _request_late(self, stream_id: int) -> None:
        self._deadlines.pop(stream_id, None)
        if stream_id in self.streams:
            self._refuse(stream_id, request_timeout(self.limits.client_header_timeout))

    def _body_overflowed(self, stream_id: int) -> bool:
        content = getattr(internals.h2_request(self.streams[stream_id]), "content", None)
        return bool(getattr(content, "overflowed", False))

    def _refuse(
        self, stream_id: int, error: RegistryError, head: dict[bytes, bytes] | None = None
    ) -> None:
        """Answer C{error} on a stream no resource will see, then reset it (NO_ERROR:
        the answer is complete, the client need send no more of its request)."""
        stream = self.streams.get(stream_id)
        if head is None:
            assert stream is not None
            head = {b":method": stream.command or b"-", b":path": stream.path or b"-"}
        method, path = head.get(b":method", b"-"), head.get(b":path", b"-")
        body = b"" if method == b"HEAD" else error.body()
        self.conn.send_headers(
            stream_id,
            [
                (b":status", b"%d" % error.status),
                (b"content-type", b"application/json; charset=utf-8"),
                (b"docker-distribution-api-version", b"registry/2.0"),
                (b"content-length", b"%d" % len(error.body())),
            ],
            end_stream=not body,
        )
        if body and self.conn.local_flow_control_window(stream_id) >= len(body):
            self.conn.send_data(stream_id, body, end_stream=True)
        try:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.StreamClosedError:
            pass  # the client had sent its whole request: the answer closed the stream
        log_access(
            getattr(self.getPeer(), "host", "-"),
            method,
            path,
            error.status,
            len(body),
            0.0,
            refusal=error.code.lower(),
            protocol="HTTP/2",
            logger=self.access_log,
        )
        if not internals.h2_flush(self):
            return
        if stream is not None:
            stream.connectionLost(Failure(ConnectionError(error.message)))
            self._requestDone(stream_id)

    # -- response flow: at most STREAM_QUEUE bytes per stream

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        # A memoryview: Twisted slices what is queued into frames, and slices of
        # bytes would copy the rest of a chunk at every frame.
        super().writeDataToStream(streamID, memoryview(data))
        if self.remainingOutboundWindow(streamID) <= 0:
            self._queue_blocked.add(streamID)

    def remainingOutboundWindow(self, streamID: int) -> int:
        window = min(self.conn.local_flow_control_window(streamID), STREAM_QUEUE)
        return window - internals.h2_queued(self, streamID)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self._closing and any(
            self.conn.local_flow_control_window(stream_id) > 0
            for stream_id in internals.h2_data_waiting(self)
        ):
            internals.h2_wake(self)  # a WINDOW_UPDATE let a parked stream send again

    def _sendPrioritisedData(self, *args: Any) -> None:
        """Twisted's sending loop, minus its spin: a stream with data queued and no window
        left stays in the priority tree and is picked at every turn of the reactor, sending
        nothing, until the client's WINDOW_UPDATE. It is parked (blocked) instead, and
        L{dataReceived} restarts the loop when a window opens."""
        for stream_id in internals.h2_data_waiting(self):
            if self.conn.local_flow_control_window(stream_id) <= 0:
                self.priority.block(stream_id)
        super()._sendPrioritisedData(*args)
        for stream_id in list(self._queue_blocked):
            stream = self.streams.get(stream_id)
            if stream is None:
                self._queue_blocked.discard(stream_id)
            elif self.remainingOutboundWindow(stream_id) > 0:
                self._queue_blocked.discard(stream_id)
                stream.windowUpdated()


def checked_headers(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], RegistryError | None]:
    """A request's headers as the edge reads them (one Host), and the error to answer
    instead of a resource, if any (the bounds of L{dockerproxy.channel})."""
    if any(k == b":authority" for k, _ in headers):
        # h2 has checked that a host header, if any, is the one :authority names.
        headers = [(k, v) for k, v in headers if k != b"host"]
    regular = 0
    for name, value in headers:
        if name == b":path" and len(value) > MAX_LINE:
            return headers, URI_TOO_LONG
        if len(name) + len(value) + 2 > MAX_LINE:
            return headers, HEADER_LINE_TOO_LONG
        if not name.startswith(b":"):
            regular += 1
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                return headers, BODY_TOO_LARGE
    if regular > MAX_HEADER_LINES:
        return headers, TOO_MANY_HEADERS
    return headers, None


class NegotiatedChannel(Protocol):
    """A client connection that speaks HTTP/1.1 (L{ProxyChannel}) unless TLS
    negotiated h2 by ALPN, known when its first bytes arrive: then a
    L{ProxyH2Connection} takes over the connection and its slot."""

    def __init__(self, http1: ProxyChannel) -> None:
        self.channel: ProxyChannel | ProxyH2Connection = http1
        self._decided = False

    def makeConnection(self, transport: ITransport) -> None:
        self.transport = transport
        self.channel.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if not self._decided:
            self._decided = True
            if getattr(self.transport, "negotiatedProtocol", None) == H2:
                self._switch()
        self.channel.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.channel.connectionLost(reason)
        if isinstance(self.channel, ProxyH2Connection) and self.channel.connections is not None:
            self.channel.connections.release(self.channel)

    def _switch(self) -> None:
        http1 = self.channel
        assert isinstance(http1, ProxyChannel)
        if not http1.hand_over():
            return  # refused (past the connection bound): it is closing
        h2conn = ProxyH2Connection(http1.clock, http1.limits, http1.connections, http1.access_log)
        h2conn.requestFactory = http1.requestFactory
        h2conn.site = h2conn.factory = http1.factory
        h2conn.timeOut = None
        if http1.connections is not None:
            http1.connections.replace(http1, h2conn)
        self.channel = h2conn
        assert self.transport is not None
        h2conn.makeConnection(self.transport)
        # Backpressure: the TLS transport pauses the connection's sending loop when full.
        self.transport.registerProducer(h2conn, True)  # type: ignore[attr-defined]
