"""Every touch of a private Twisted attribute, in one place, checked at import.

Twisted has no public knob for what these do: the size of a TCP transport's
recv() and send() calls, a zero-copy send underneath a transport, waiting for a
socket to be writable, the request line a channel is parsing, and twistd's exit
status. They were read from Twisted 26.10 (pyproject.toml pins the range). At
import each feature checks that what it touches exists; a missing attribute
turns that feature off with one log line, and the proxy falls back to what
Twisted does on its own (slower, or less precise, never wrong).

The HTTP channel (L{dockerproxy.channel}) also overrides
C{HTTPChannel._respondToBadRequestAndDisconnect} to answer JSON; L{JSON_BAD_REQUEST}
says whether Twisted still calls it. The HTTP/2 connection (L{dockerproxy.http2})
overrides H2Connection's stream hooks; L{H2_HOOKS} says whether they are all there
(without them, h2 is not offered).
"""

from __future__ import annotations

import dis
import inspect
from collections.abc import Iterable
from typing import Any

from twisted.internet import abstract, base
from twisted.logger import Logger
from twisted.web import _http2, _newclient, http

log = Logger()

# Twisted versions these checks were made for (pyproject.toml pins the same range).
CHECKED_WITH = "26.10"


def assigned(cls: type, name: str) -> bool:
    """Whether a method of C{cls} (or a base) assigns C{self.<name>}: an attribute
    Twisted sets only while it runs (a channel's request line, say)."""
    for klass in cls.__mro__:
        for member in vars(klass).values():
            code = getattr(member, "__code__", None)
            if code is not None and any(
                i.opname == "STORE_ATTR" and i.argval == name for i in dis.get_instructions(code)
            ):
                return True
    return False


def feature(
    what: str, has: Iterable[tuple[object, str]], sets: Iterable[tuple[type, str]] = ()
) -> bool:
    """C{True} if every object in C{has} has its attribute and every class in C{sets}
    assigns its attribute; else one log line naming what is missing, and C{False}."""
    missing = [f"{_name(obj)}.{name}" for obj, name in has if not hasattr(obj, name)]
    missing += [f"{cls.__name__}.{name}" for cls, name in sets if not assigned(cls, name)]
    if missing:
        log.warn(
            "Twisted has no {missing} (checked with {checked}): {what} is off",
            missing=", ".join(missing),
            checked=CHECKED_WITH,
            what=what,
        )
        return False
    return True


def _name(obj: object) -> str:
    return obj.__name__ if isinstance(obj, type) else type(obj).__name__


class _ParameterNames:
    """A function's parameters as attributes, for L{feature} to check a keyword Twisted passes."""

    def __init__(self, function: Any) -> None:
        self.__name__ = f"{function.__qualname__}()"
        for name in inspect.signature(function).parameters:
            setattr(self, name, True)


class _NoReactor:
    """Lets Twisted's transports and channels be built for inspection, touching nothing."""


# Instances as Twisted builds them, so instance attributes set in __init__ count too.
_TRANSPORT = abstract.FileDescriptor(reactor=_NoReactor())  # type: ignore[arg-type]
_BODY_TRANSPORT = _newclient.TransportProxyProducer(None)
_CHANNEL = http.HTTPChannel()

# Reads sized to the client (relay) and 1 MiB reads for fills: the TCP transport
# under an upstream body's transport, and its recv() size (also its write pause
# threshold, so it is only ever changed on upstream connections).
SIZED_READS = feature(
    "sizing upstream reads", [(_BODY_TRANSPORT, "_producer"), (_TRANSPORT, "bufferSize")]
)
# One send() for a whole chunk to a client.
WHOLE_SENDS = feature("whole-chunk sends", [(_TRANSPORT, "SEND_LIMIT")])
# Pausing a client's producers until its socket is writable, as a full transport does.
WRITABLE_WAIT = feature(
    "waiting for a writable client socket",
    [(_TRANSPORT, "producerPaused"), (_TRANSPORT, "startWriting")],
)
# Zero-copy sends of cached blobs: what the transport still has to send.
SENDFILE = WRITABLE_WAIT and feature(
    "sendfile() for cached blobs",
    [(_TRANSPORT, "dataBuffer"), (_TRANSPORT, "offset"), (_TRANSPORT, "_tempDataLen")],
)
# A channel whose socket is full when a new producer registers (pipelined requests).
CHANNEL_WAITING = feature(
    "pausing producers of pipelined requests", [(_CHANNEL, "_waitingForTransport")]
)
# The request line being parsed, for the access log of a refused request.
REQUEST_LINE = feature(
    "logging refused request lines",
    [],
    [(http.HTTPChannel, "_command"), (http.HTTPChannel, "_path")],
)
# Refusing a request: stop reading further pipelined input, and see buffered input.
CHANNEL_INPUT = feature(
    "lingering after a refusal", [(_CHANNEL, "_buffer")], [(http.HTTPChannel, "_networkProducer")]
)
# Twisted's own 400 for what it cannot parse, answered as registry JSON instead.
JSON_BAD_REQUEST = feature(
    "registry JSON for requests Twisted cannot parse",
    [(http.HTTPChannel, "_respondToBadRequestAndDisconnect")],
)
# twistd's exit status after a completed graceful stop.
EXIT_SIGNAL = feature("exit status 0 after a graceful stop", [(base.ReactorBase, "_exitSignal")])
# HTTP/2: the stream hooks dockerproxy.http2 overrides, the per-stream send queues it
# bounds, a stream's request, the flush of control frames, and connectionLost's flag
# for "not closed yet" (GOAWAY received).
H2_HOOKS = feature(
    "HTTP/2 (h2 by ALPN)",
    [
        (_http2.H2Connection, "_requestReceived"),
        (_http2.H2Connection, "_requestDataReceived"),
        (_http2.H2Connection, "_requestEnded"),
        (_http2.H2Connection, "_requestDone"),
        (_http2.H2Connection, "_sendPrioritisedData"),
        (_http2.H2Connection, "_tryToWriteControlData"),
        (_ParameterNames(_http2.H2Connection.connectionLost), "_cancelTimeouts"),
    ],
    [
        (_http2.H2Connection, "_outboundStreamQueues"),
        (_http2.H2Connection, "_sendingDeferred"),
        (_http2.H2Stream, "_request"),
    ],
)
del _TRANSPORT, _BODY_TRANSPORT, _CHANNEL


# ----------------------------------------------------------------------- transports


def upstream_tcp(body_transport: object) -> Any | None:
    """The TCP transport doing the recv()s under an upstream body's transport, if any."""
    if not SIZED_READS:
        return None
    tcp_transport = getattr(body_transport, "_producer", None)
    return tcp_transport if hasattr(tcp_transport, "bufferSize") else None


def set_read_size(tcp_transport: Any, size: int) -> None:
    """recv() up to C{size} bytes at a time from an upstream TCP transport."""
    if SIZED_READS:
        tcp_transport.bufferSize = size


def read_size(tcp_transport: Any) -> int:
    return int(tcp_transport.bufferSize)


def enlarge_sends(transport: Any, size: int) -> None:
    """Let a client's TCP transport send up to C{size} bytes in one send()."""
    if WHOLE_SENDS and transport is not None and hasattr(transport, "SEND_LIMIT"):
        transport.SEND_LIMIT = max(transport.SEND_LIMIT, size)


def pause_until_writable(tcp_transport: Any) -> bool:
    """Keep a client's producers paused until its socket is reported writable; C{False}
    if the transport cannot tell them then.

    What a transport does when its own buffer fills: marked paused and registered
    for writing, its doWrite() flushes what is buffered and, once empty, resumes
    its producer (the HTTP channel, which resumes the request's producer).
    """
    producer = getattr(tcp_transport, "producer", None)
    if (
        not WRITABLE_WAIT
        or producer is None
        or not hasattr(tcp_transport, "startWriting")
        or not getattr(tcp_transport, "connected", False)
        or getattr(tcp_transport, "disconnecting", True)
    ):
        return False
    tcp_transport.producerPaused = True
    producer.pauseProducing()
    tcp_transport.startWriting()
    return True


def buffered(transport: Any) -> int:
    """Bytes waiting in a transport's write buffer (its two buffers, as doWrite sees them);
    only meaningful where L{SENDFILE} is on."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


# ----------------------------------------------------------------------- HTTP channels


def channel_waiting(channel: object) -> bool:
    """Whether a channel's socket is full now: a producer registered now starts paused."""
    return CHANNEL_WAITING and bool(getattr(channel, "_waitingForTransport", False))


def request_line(channel: object) -> tuple[bytes, bytes]:
    """The method and path of the request a channel is parsing (C{-} when unknown)."""
    if not REQUEST_LINE:
        return b"-", b"-"
    return getattr(channel, "_command", b"-"), getattr(channel, "_path", b"-")


def stop_reading_requests(channel: Any) -> None:
    """Stop the channel pausing and resuming its transport for further requests."""
    if CHANNEL_INPUT:
        channel._networkProducer.unregisterProducer()


def has_buffered_input(channel: object) -> bool:
    """Whether a channel holds input not yet parsed (the start of another request)."""
    return CHANNEL_INPUT and bool(getattr(channel, "_buffer", b""))


# ----------------------------------------------------------------------- HTTP/2


def h2_queued(connection: Any, stream_id: int) -> int:
    """Response bytes queued on an h2 stream, not yet framed and sent."""
    queue = connection._outboundStreamQueues.get(stream_id, ())
    return sum(len(chunk) for chunk in queue if isinstance(chunk, bytes | memoryview))


def h2_data_waiting(connection: Any) -> list[int]:
    """The h2 streams whose next queued item is data (not the end of the stream)."""
    return [
        stream_id
        for stream_id, queue in connection._outboundStreamQueues.items()
        if queue and isinstance(queue[0], bytes | memoryview)
    ]


def h2_wake(connection: Any) -> None:
    """Restart an h2 connection's sending loop if it waits for a stream to unblock."""
    waiting = connection._sendingDeferred
    if waiting is not None:
        connection._sendingDeferred = None
        waiting.callback(None)


def h2_request(stream: object) -> object:
    """The request an h2 stream carries."""
    return getattr(stream, "_request", None)


def h2_flush(connection: Any) -> bool:
    """Write an h2 connection's pending control frames; C{False} if that aborted it
    (too many buffered for a client that does not read)."""
    return bool(connection._tryToWriteControlData())


def h2_connection_closed(kwargs: dict[str, Any]) -> bool:
    """Whether H2Connection.connectionLost was called for a closed connection, not for
    a GOAWAY (which Twisted passes C{_cancelTimeouts=False} for, the socket still open)."""
    return bool(kwargs.get("_cancelTimeouts", True))


# ----------------------------------------------------------------------- the reactor


def forget_exit_signal(reactor: object, signum: int) -> None:
    """After a completed graceful stop on C{signum}, let twistd exit with status 0:
    it kills itself again with the signal that stopped the reactor (C{_exitSignal},
    Twisted's C{_ISupportsExitSignalCapturing})."""
    if EXIT_SIGNAL and getattr(reactor, "_exitSignal", None) == signum:
        reactor._exitSignal = None  # type: ignore[attr-defined]
