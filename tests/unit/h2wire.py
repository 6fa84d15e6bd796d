"""An HTTP/2 client (the h2 package) talking to the proxy's Site over a StringTransport
on which TLS negotiated h2, frame by frame; the test's Clock runs the sending loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
from hyperframe.frame import Frame, GoAwayFrame
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers

from dockerproxy.site import ProxySite

GOAWAY = 0x7


class ALPNTransport(StringTransport):
    """A TLS connection whose handshake chose C{negotiatedProtocol}; records aborts."""

    aborted = False

    def __init__(self, negotiated: bytes | None = b"h2") -> None:
        super().__init__()
        self.negotiatedProtocol = negotiated

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


@dataclass
class StreamSeen:
    """What the client received on one stream."""

    status: int | None = None
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code, if reset

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode())
        return None if values is None else ",".join(v.decode("latin-1") for v in values)


class H2Wire:
    """One h2 client connection to C{site}; C{read_window}: the client reads that much
    of each stream at once and opens its window again only when told (L{take})."""

    def __init__(
        self,
        site: ProxySite,
        clock: Clock,
        authority: bytes = b"mirror.test",
        validate: bool = True,
    ) -> None:
        self.clock = clock
        self.authority = authority
        self.transport = ALPNTransport()
        self.protocol = site.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate
        )
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()
        self.streams: dict[int, StreamSeen] = {}
        self.goaway: GoAwayFrame | None = None
        self.unread: dict[int, int] = {}  # bytes received and not yet acknowledged
        self.pump()

    def request(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream; with C{end} False, the request's end is left to the test."""
        stream_id = self.client.get_next_available_stream_id()
        head = [(b":method", method), (b":path", path), (b":scheme", b"https")]
        head.append((b":authority", self.authority))
        self.client.send_headers(stream_id, head + (headers or []), end_stream=end and not body)
        if body:
            self.client.send_data(stream_id, body, end_stream=end)
        self.streams[stream_id] = StreamSeen()
        self.pump()
        return stream_id

    def reset(self, stream_id: int) -> None:
        self.client.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self.pump()

    def take(self, stream_id: int) -> None:
        """The client read what it received on C{stream_id}: its window opens again."""
        count = self.unread.pop(stream_id, 0)
        if count:
            self.client.acknowledge_received_data(count, stream_id)
        self.pump()

    def pump(self) -> None:
        """Exchange frames, and run the server's sending loop, until both are quiet."""
        for _ in range(10_000):
            outgoing = self.client.data_to_send()
            if outgoing and not self.transport.disconnecting:
                self.protocol.dataReceived(outgoing)
            self.clock.advance(0)
            incoming = self.transport.value()
            self.transport.clear()
            for frame in self._frames(incoming):
                self._received(self.client.receive_data(frame))
            if not outgoing and not incoming and not self._loop_due():
                return
        raise AssertionError("the connection never went quiet")

    def _frames(self, data: bytes) -> list[bytes]:
        """The frames in C{data}, but a GOAWAY's, which is kept in L{goaway}: h2, as a
        client, takes no frame after one, where RFC 9113 lets the streams it names go on."""
        frames = []
        while data:
            length = int.from_bytes(data[:3], "big") + 9
            frame, data = data[:length], data[length:]
            if frame[3] == GOAWAY:
                self.goaway, _ = Frame.parse_frame_header(memoryview(frame[:9]))
                assert isinstance(self.goaway, GoAwayFrame)
                self.goaway.parse_body(memoryview(frame[9:]))
            else:
                frames.append(frame)
        return frames

    def _loop_due(self) -> bool:
        return any(call.getTime() <= self.clock.seconds() for call in self.clock.getDelayedCalls())

    def _received(self, events: list[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                seen = self.streams[event.stream_id]
                for name, value in event.headers:
                    if name == b":status":
                        seen.status = int(value)
                    else:
                        seen.headers.addRawHeader(name, value)
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id].body += event.data
                self.unread[event.stream_id] = (
                    self.unread.get(event.stream_id, 0) + event.flow_controlled_length
                )
            elif isinstance(event, h2.events.StreamEnded):
                self.streams[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.streams[event.stream_id].reset = event.error_code
