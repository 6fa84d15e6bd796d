"""The streaming body relay, with a real twisted.web Request and StringTransports on both sides.

The client side is a real Site/HTTPChannel connected to a StringTransport, as a TCP
connection would be; the upstream side is a fake IResponse whose deliverBody connects
the relay to another StringTransport (the upstream socket, seen as a push producer).
"""

from __future__ import annotations

import socket
import struct

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import Site

from dockerproxy.relay import (
    READ_BLIND,
    READ_MAX,
    READ_MIN,
    SO_MEMINFO,
    Collect,
    Discard,
    client_connection,
    payload_room,
    read_size,
    relay_body,
    send_room,
)
from tests.unit.fakes import Capture, ClientTransport, FakeResponse, lost

IDLE = 5.0
MiB = 1024 * 1024


class MemInfoSocket(socket.socket):
    """A socket whose kernel send buffer the test describes: SO_MEMINFO's sndbuf and
    wmem_queued."""

    def __init__(self, sndbuf: int = 4 * MiB, queued: int = 0) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.sndbuf = sndbuf
        self.queued = queued

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> bytes:  # type: ignore[override]
        assert (level, option) == (socket.SOL_SOCKET, SO_MEMINFO)
        return struct.pack("6I", 0, 0, 0, self.sndbuf, 0, self.queued)[:buflen]


class SocketClientTransport(ClientTransport):
    """A client's TCP transport, with the socket beneath it."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


class TCPClientTransport(SocketClientTransport):
    """A client's TCP transport as Twisted's: registered for writing (doWrite() is called
    once the socket is writable) and marking its producer paused."""

    producerPaused = False
    writing = False

    def startWriting(self) -> None:
        self.writing = True

    def socket_writable(self) -> None:
        """What doWrite() does with nothing left to send: resume a paused producer."""
        self.writing = False
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()


class TLSClientTransport(ClientTransport):
    """A client's TLS transport: its getHandle() is the TLS connection, and the TCP
    transport beneath it owns the socket."""

    def __init__(self, tcp: SocketClientTransport) -> None:
        super().__init__()
        self.transport = tcp

    def getHandle(self) -> object:
        return object()


class TCPReads:
    bufferSize = 65536  # Twisted's default recv() size


class UpstreamTransport(StringTransport):
    """The upstream body's transport as the relay sees it (twisted.web's
    TransportProxyProducer): the TCP transport doing the recv()s is its _producer."""

    def __init__(self) -> None:
        super().__init__()
        self._producer = TCPReads()


class RelayHarness:
    """One client request with an upstream body relayed into it."""

    def __init__(
        self,
        length: int | object = 10,
        client: ClientTransport | None = None,
        upstream: StringTransport | None = None,
    ) -> None:
        self.clock = Clock()
        self.resource = Capture()
        site = Site(self.resource, reactor=self.clock)
        self.protocol = site.buildProtocol(None)
        self.client = client or ClientTransport()
        self.protocol.makeConnection(self.client)
        self.protocol.dataReceived(b"GET /v2/a/blobs/x HTTP/1.1\r\nHost: mirror\r\n\r\n")
        self.request = self.resource.requests[0]
        # The TCP transport's registered producer: what it pauses when its buffer fills.
        self.channel = self.client.producer
        self.upstream = upstream or StringTransport()
        self.response = FakeResponse(length, self.upstream)
        if length is not UNKNOWN_LENGTH:
            self.request.setHeader(b"content-length", b"%d" % length)
        self.relay = relay_body(self.response, self.request, self.clock, IDLE)
        self.outcome: list[object] = []
        self.relay.done.addBoth(self.outcome.append)

    def upstream_sends(self, data: bytes) -> None:
        assert self.response.protocol is not None
        self.response.protocol.dataReceived(data)

    def upstream_ends(self, reason: Failure) -> None:
        assert self.response.protocol is not None
        self.response.protocol.connectionLost(reason)

    def client_goes_away(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone("client closed")))

    def sent(self) -> bytes:
        return self.client.value()

    def body_sent(self) -> bytes:
        return self.sent().partition(b"\r\n\r\n")[2]


class BackpressureTests(SynchronousTestCase):
    def test_relay_is_the_requests_streaming_producer(self) -> None:
        h = RelayHarness()
        self.assertIs(h.request.producer, h.relay)
        self.assertTrue(h.request.streamingProducer)

    def test_client_pause_pauses_upstream(self) -> None:
        h = RelayHarness()
        h.upstream_sends(b"abc")
        h.channel.pauseProducing()
        self.assertEqual(h.upstream.producerState, "paused")

    def test_client_resume_resumes_upstream(self) -> None:
        h = RelayHarness()
        h.channel.pauseProducing()
        h.channel.resumeProducing()
        self.assertEqual(h.upstream.producerState, "producing")

    def test_pause_resume_cycles_keep_relaying(self) -> None:
        h = RelayHarness(length=6)
        for part in (b"ab", b"cd", b"ef"):
            h.channel.pauseProducing()
            self.assertEqual(h.upstream.producerState, "paused")
            h.channel.resumeProducing()
            h.upstream_sends(part)
        h.upstream_ends(Failure(ResponseDone()))
        self.assertEqual(h.body_sent(), b"abcdef")
        self.assertTrue(h.request.finished)

    def test_producer_is_unregistered_when_the_body_ends(self) -> None:
        h = RelayHarness(length=3)
        h.upstream_sends(b"abc")
        h.upstream_ends(Failure(ResponseDone()))
        self.assertIsNone(h.request.producer)
        # A later pause of the client connection no longer reaches the upstream.
        h.channel.pauseProducing()
        self.assertEqual(h.upstream.producerState, "producing")

    def test_client_sends_are_enlarged_but_its_pause_threshold_is_kept(self) -> None:
        """Large sends, but the upstream pauses as soon as one chunk is queued."""
        sock = socket.socket()
        self.addCleanup(sock.close)
        client = SocketClientTransport(sock)
        client.bufferSize = 65536  # type: ignore[attr-defined]
        client.SEND_LIMIT = 131072  # type: ignore[attr-defined]
        RelayHarness(client=client)
        self.assertEqual(client.SEND_LIMIT, READ_MAX)  # type: ignore[attr-defined]
        self.assertEqual(client.bufferSize, 65536)  # type: ignore[attr-defined]


class ReadSizeTests(SynchronousTestCase):
    """Upstream reads sized to what the client's socket takes now: a stalled client
    leaves the bytes it has not taken in the upstream socket, not in the proxy."""

    def sock(self, sndbuf: int = 4 * MiB, queued: int = 0) -> MemInfoSocket:
        sock = MemInfoSocket(sndbuf, queued)
        self.addCleanup(sock.close)
        return sock

    def harness(self, sock: socket.socket) -> tuple[RelayHarness, TCPReads]:
        upstream = UpstreamTransport()
        h = RelayHarness(client=SocketClientTransport(sock), upstream=upstream)
        return h, upstream._producer

    def test_a_client_with_room_gets_the_largest_reads(self) -> None:
        _, reads = self.harness(self.sock(queued=0))
        self.assertEqual(reads.bufferSize, READ_MAX)

    def test_each_resume_sizes_the_next_read(self) -> None:
        sock = self.sock()
        h, reads = self.harness(sock)
        for queued, expected in ((5 * MiB // 2, 3 * MiB // 4), (0, READ_MAX), (3 * MiB, READ_MIN)):
            h.channel.pauseProducing()
            sock.queued = queued
            h.channel.resumeProducing()
            self.assertEqual(reads.bufferSize, expected, queued)

    def test_a_client_taking_nothing_now_is_read_for_once_its_socket_is_writable(self) -> None:
        """Nothing is read while the kernel would not report the socket writable, so a
        stalled client holds no body in the proxy; then the read is sized to the room."""
        sock = self.sock()
        client = TCPClientTransport(sock)
        upstream = UpstreamTransport()
        h = RelayHarness(client=client, upstream=upstream)
        h.channel.pauseProducing()
        sock.queued = 3 * MiB
        h.channel.resumeProducing()
        self.assertEqual(upstream.producerState, "paused")
        self.assertTrue(client.producerPaused)
        self.assertTrue(client.writing)
        sock.queued = 2 * MiB
        client.socket_writable()
        self.assertEqual(upstream.producerState, "producing")
        self.assertEqual(upstream._producer.bufferSize, READ_MAX)

    def test_a_closing_client_is_not_waited_for(self) -> None:
        sock = self.sock()
        client = TCPClientTransport(sock)
        upstream = UpstreamTransport()
        h = RelayHarness(client=client, upstream=upstream)
        h.channel.pauseProducing()
        sock.queued = 3 * MiB
        client.disconnecting = True
        h.channel.resumeProducing()
        self.assertFalse(client.writing)
        self.assertEqual(upstream.producerState, "producing")
        self.assertEqual(upstream._producer.bufferSize, READ_MIN)

    def test_no_socket_gets_middle_sized_reads(self) -> None:
        upstream = UpstreamTransport()
        RelayHarness(upstream=upstream)
        self.assertEqual(upstream._producer.bufferSize, READ_BLIND)

    def test_read_size_is_the_room_within_bounds(self) -> None:
        self.assertEqual(read_size(None), READ_BLIND)
        self.assertEqual(read_size(0), READ_MIN)
        self.assertEqual(read_size(3 * READ_MIN), 3 * READ_MIN)
        self.assertEqual(read_size(64 * MiB), READ_MAX)

    def test_payload_room_is_half_the_free_space(self) -> None:
        """Packets cost more than their payload: a stalled client's 1.4 times."""
        self.assertEqual(payload_room(4 * MiB, 0), 2 * MiB)
        self.assertEqual(payload_room(4 * MiB, MiB), 3 * MiB // 2)

    def test_payload_room_is_zero_until_the_socket_would_be_writable(self) -> None:
        """The kernel wakes a writer once its free space is half what is queued."""
        self.assertEqual(payload_room(4 * MiB, 3 * MiB), 0)
        self.assertEqual(payload_room(3 * MiB, 2 * MiB), MiB // 2)

    def test_what_send_room_promises_a_real_socket_takes(self) -> None:
        """A slow client with a small window (small packets) behind a send buffer
        smaller than READ_MAX: each send of the promised room is taken whole, and the
        room is 0 while the socket is too full to be written to."""
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        peer = socket.socket()
        self.addCleanup(peer.close)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.connect(server.getsockname())
        peer.settimeout(10)
        sock, _ = server.accept()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        sock.setblocking(False)
        sends = full = 0
        for _ in range(20):
            room = send_room(sock)
            if room:
                size = min(room, READ_MAX)
                self.assertEqual(sock.send(b"x" * size), size)
                sends += 1
            else:  # the client reads a little, as a slow one does
                full += 1
                read = 0
                while read < 200 * 1024:
                    read += len(peer.recv(65536))
        self.assertGreater(sends, 3)
        self.assertGreater(full, 3)
        sock.close()
        self.assertIsNone(send_room(sock))

    def test_the_tcp_transport_is_found_under_tls(self) -> None:
        """TLS wraps the TCP transport; its getHandle() is the TLS connection."""
        tcp = SocketClientTransport(self.sock())

        class TLS:
            transport = tcp

            def getHandle(self) -> object:
                return object()

        self.assertIs(client_connection(TLS()), tcp)
        self.assertIs(client_connection(tcp), tcp)
        self.assertIsNone(client_connection(StringTransport()))

    def test_under_tls_the_tcp_transport_sends_whole_chunks(self) -> None:
        """TLS writes its records to the TCP transport, which must send a chunk the
        room was measured for in one send()."""
        tcp = SocketClientTransport(self.sock(queued=0))
        tcp.SEND_LIMIT = 131072  # type: ignore[attr-defined]
        upstream = UpstreamTransport()
        RelayHarness(client=TLSClientTransport(tcp), upstream=upstream)
        self.assertEqual(tcp.SEND_LIMIT, READ_MAX)  # type: ignore[attr-defined]
        self.assertEqual(upstream._producer.bufferSize, READ_MAX)


class ClientAbortTests(SynchronousTestCase):
    def test_client_loss_stops_upstream(self) -> None:
        h = RelayHarness()
        h.upstream_sends(b"abc")
        h.client_goes_away()
        self.assertEqual(h.upstream.producerState, "stopped")
        self.assertFalse(h.request.finished)

    def test_client_loss_before_any_body_stops_upstream(self) -> None:
        h = RelayHarness()
        h.client_goes_away()
        self.assertEqual(h.upstream.producerState, "stopped")

    def test_upstream_end_after_client_loss_is_quiet(self) -> None:
        h = RelayHarness()
        h.upstream_sends(b"abc")
        h.client_goes_away()
        written = h.sent()
        # The stopped upstream connection then reports its loss, as a real one would.
        h.upstream_ends(lost(ConnectionDone()))
        self.assertEqual(h.outcome, [False])
        self.assertFalse(h.request.finished)
        self.assertEqual(h.sent(), written)
        self.assertFalse(h.client.aborted)

    def test_complete_upstream_body_after_client_loss_does_not_finish(self) -> None:
        h = RelayHarness(length=3)
        h.client_goes_away()
        h.upstream_ends(Failure(ResponseDone()))
        self.assertEqual(h.outcome, [False])
        self.assertFalse(h.request.finished)


class TruncatedUpstreamTests(SynchronousTestCase):
    def test_connection_lost_mid_body_aborts_the_client(self) -> None:
        h = RelayHarness(length=10)
        h.upstream_sends(b"abc")
        h.upstream_ends(lost())
        self.assertTrue(h.client.aborted)
        self.assertFalse(h.request.finished)
        self.assertEqual(h.outcome, [False])
        self.assertEqual(h.body_sent(), b"abc")

    def test_clean_end_short_of_content_length_aborts_the_client(self) -> None:
        h = RelayHarness(length=10)
        h.upstream_sends(b"abcdefghi")
        h.upstream_ends(Failure(ResponseDone()))
        self.assertTrue(h.client.aborted)
        self.assertFalse(h.request.finished)
        self.assertEqual(h.outcome, [False])

    def test_potential_data_loss_with_a_length_aborts_the_client(self) -> None:
        h = RelayHarness(length=10)
        h.upstream_sends(b"abc")
        h.upstream_ends(Failure(PotentialDataLoss()))
        self.assertTrue(h.client.aborted)
        self.assertFalse(h.request.finished)

    def test_chunked_body_cut_short_gets_no_final_chunk(self) -> None:
        h = RelayHarness(length=UNKNOWN_LENGTH)
        h.upstream_sends(b"abc")
        h.upstream_ends(lost())
        self.assertTrue(h.client.aborted)
        self.assertFalse(h.request.finished)
        self.assertIn(b"Transfer-Encoding: chunked", h.sent())
        self.assertFalse(h.sent().endswith(b"0\r\n\r\n"))

    def test_the_early_end_is_logged(self) -> None:
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = RelayHarness(length=10)
        h.upstream_sends(b"abc")
        h.upstream_ends(lost())
        warnings = [e for e in events if e.get("log_namespace") == "dockerproxy.relay"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["received"], 3)


class CompleteBodyTests(SynchronousTestCase):
    def test_complete_body_finishes_the_request(self) -> None:
        h = RelayHarness(length=10)
        h.upstream_sends(b"abcde")
        h.upstream_sends(b"fghij")
        h.upstream_ends(Failure(ResponseDone()))
        self.assertTrue(h.request.finished)
        self.assertFalse(h.client.aborted)
        self.assertEqual(h.outcome, [True])
        self.assertIn(b"Content-Length: 10\r\n", h.sent())
        self.assertEqual(h.body_sent(), b"abcdefghij")

    def test_chunked_body_ends_with_the_final_chunk(self) -> None:
        h = RelayHarness(length=UNKNOWN_LENGTH)
        h.upstream_sends(b"abc")
        h.upstream_ends(Failure(ResponseDone()))
        self.assertTrue(h.request.finished)
        self.assertTrue(h.sent().endswith(b"3\r\nabc\r\n0\r\n\r\n"))
        self.assertEqual(h.outcome, [True])

    def test_close_delimited_body_is_complete(self) -> None:
        h = RelayHarness(length=UNKNOWN_LENGTH)
        h.upstream_sends(b"abc")
        h.upstream_ends(Failure(PotentialDataLoss()))
        self.assertTrue(h.request.finished)
        self.assertFalse(h.client.aborted)

    def test_empty_body(self) -> None:
        h = RelayHarness(length=0)
        h.upstream_ends(Failure(ResponseDone()))
        self.assertTrue(h.request.finished)
        self.assertEqual(h.outcome, [True])

    def test_received_bytes_are_counted(self) -> None:
        h = RelayHarness(length=7)
        h.upstream_sends(b"abc")
        h.upstream_sends(b"defg")
        self.assertEqual(h.relay.received, 7)

    def test_client_can_keep_the_connection(self) -> None:
        h = RelayHarness(length=1)
        h.upstream_sends(b"x")
        h.upstream_ends(Failure(ResponseDone()))
        self.assertFalse(h.client.disconnecting)


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_upstream_is_stopped(self) -> None:
        h = RelayHarness()
        h.upstream_sends(b"abc")
        h.clock.advance(IDLE)
        self.assertEqual(h.upstream.producerState, "stopped")

    def test_idle_timeout_aborts_the_client(self) -> None:
        h = RelayHarness()
        h.upstream_sends(b"abc")
        h.clock.advance(IDLE)
        h.upstream_ends(lost())
        self.assertTrue(h.client.aborted)
        self.assertFalse(h.request.finished)
        self.assertEqual(h.outcome, [False])

    def test_idle_timeout_wins_over_a_clean_end(self) -> None:
        h = RelayHarness(length=3)
        h.upstream_sends(b"abc")
        h.clock.advance(IDLE)
        h.upstream_ends(Failure(ResponseDone()))
        self.assertTrue(h.client.aborted)
        self.assertFalse(h.request.finished)

    def test_a_stall_is_blamed_on_whoever_stalled(self) -> None:
        """A client that stops reading is cut off too, but the log names the client."""
        h = RelayHarness()
        h.upstream_sends(b"abc")
        h.channel.pauseProducing()
        h.clock.advance(IDLE)
        self.assertEqual(h.relay._failed_reason, f"the client read nothing for {IDLE:g} seconds")
        upstream_stall = RelayHarness()
        upstream_stall.clock.advance(IDLE)
        self.assertEqual(
            upstream_stall.relay._failed_reason, f"the upstream sent nothing for {IDLE:g} seconds"
        )

    def test_client_resume_restarts_the_timer(self) -> None:
        h = RelayHarness()
        h.channel.pauseProducing()
        h.clock.advance(IDLE - 1)
        h.channel.resumeProducing()
        h.clock.advance(IDLE - 1)
        self.assertEqual(h.upstream.producerState, "producing")

    def test_idle_timeout_without_any_bytes(self) -> None:
        h = RelayHarness()
        h.clock.advance(IDLE - 0.1)
        self.assertEqual(h.upstream.producerState, "producing")
        h.clock.advance(0.1)
        self.assertEqual(h.upstream.producerState, "stopped")

    def test_each_chunk_resets_the_timer(self) -> None:
        h = RelayHarness(length=3)
        for part in (b"a", b"b", b"c"):
            h.clock.advance(IDLE - 1)
            h.upstream_sends(part)
        self.assertEqual(h.upstream.producerState, "producing")
        h.upstream_ends(Failure(ResponseDone()))
        self.assertTrue(h.request.finished)

    def test_timer_is_cancelled_when_the_body_ends(self) -> None:
        h = RelayHarness(length=1)
        h.upstream_sends(b"x")
        h.upstream_ends(Failure(ResponseDone()))
        h.clock.advance(IDLE * 2)
        self.assertEqual(h.upstream.producerState, "producing")

    def test_timer_is_cancelled_when_the_body_fails(self) -> None:
        h = RelayHarness(length=2)
        h.upstream_sends(b"x")
        h.upstream_ends(lost())
        h.clock.advance(IDLE * 2)
        self.assertEqual(h.upstream.producerState, "producing")


class SmallBodyTests(SynchronousTestCase):
    def deliver(self, protocol: Discard | Collect) -> StringTransport:
        transport = StringTransport()
        protocol.makeConnection(transport)
        return transport

    def test_collect(self) -> None:
        collect = Collect(limit=10)
        self.deliver(collect)
        collect.dataReceived(b"abc")
        collect.dataReceived(b"def")
        collect.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.successResultOf(collect.done), b"abcdef")

    def test_collect_over_the_limit_fails_and_stops(self) -> None:
        collect = Collect(limit=4)
        transport = self.deliver(collect)
        collect.dataReceived(b"abc")
        collect.dataReceived(b"def")
        self.assertEqual(transport.producerState, "stopped")
        collect.connectionLost(lost())
        self.failureResultOf(collect.done, ValueError)

    def test_collect_failed_body(self) -> None:
        collect = Collect(limit=10)
        self.deliver(collect)
        collect.connectionLost(lost())
        self.failureResultOf(collect.done, ResponseFailed)

    def test_discard_stops_past_the_limit(self) -> None:
        discard = Discard(limit=4)
        transport = self.deliver(discard)
        discard.dataReceived(b"abc")
        self.assertEqual(transport.producerState, "producing")
        discard.dataReceived(b"def")
        self.assertEqual(transport.producerState, "stopped")
        discard.connectionLost(lost())
        self.assertIsNone(self.successResultOf(discard.done))
