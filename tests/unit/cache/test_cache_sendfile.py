"""Zero-copy sends of blob files (L{dockerproxy.cache.sendfile.Sendfile}): of committed
blobs, and of fills to their followers up to what is written.

They need a real socket: a loopback TCP connection under Twisted's own tcp.Server, with
the test playing the reactor (L{SocketClient}); os.sendfile is watched by L{SendfileCalls}.
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from zope.interface import directlyProvides

from dockerproxy.cache import senders as senders_module
from dockerproxy.cache.blobs import BlobCache
from dockerproxy.digests import Digest
from dockerproxy.shaping import ByteBudget, ShapedRequest, capacity_for
from tests.unit.cache.blobharness import CacheTestCase, sha256
from tests.unit.fakes import Capture


class SocketClient:
    """One blob request over a real loopback TCP connection, driven by hand.

    The server side is Twisted's own C{tcp.Server} over the accepted socket, with a
    L{MemoryReactorClock} as its reactor: the test plays the reactor, calling the
    transport's C{doWrite} while it asks for writable events. The client side is a
    plain non-blocking socket that the test reads (or does not read) itself.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        method: bytes = b"GET",
        buffer_size: int | None = None,
        rate: float | None = None,
    ) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.sock = socket.create_connection(listener.getsockname())
        server_sock, address = listener.accept()
        listener.close()
        if buffer_size is not None:  # small fixed buffers: a client that stops reading
            server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
        self.sock.setblocking(False)
        self.reactor = MemoryReactorClock()
        resource = Capture()
        site = Site(resource, reactor=self.reactor)
        if rate is not None:  # a client with a bandwidth limit, as the proxy's Site has
            site.requestFactory = ShapedRequest
        self.protocol = site.buildProtocol(address)
        self.transport = tcp.Server(server_sock, self.protocol, address, None, 1, self.reactor)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(method + b" /v2/a/blobs/x HTTP/1.1\r\nHost: mirror\r\n\r\n")
        self.request = resource.requests[0]
        if rate is not None:
            self.request.budget = ByteBudget(self.reactor, rate)
        self.received = bytearray()
        self.outcome: list[object] = []
        self.writable_events = 0
        self.reset = False
        case.addCleanup(self.close)

    def served(
        self, cache: BlobCache, digest: Digest, byte_range: tuple[int, int | None] | None = None
    ) -> SocketClient:
        cache.serve(self.request, digest, byte_range).addBoth(self.outcome.append)
        return self

    def waiting(self) -> bool:
        """Whether the transport asked the reactor for a writable event."""
        return self.transport in self.reactor.getWriters()

    def writable(self) -> None:
        """The reactor's writable event for the server's socket."""
        self.writable_events += 1
        why = self.transport.doWrite()
        if why:
            self.transport.connectionLost(Failure(why))

    def read(self, wait: float = 0.0) -> int:
        """Read what the client's socket holds (waiting up to C{wait} s for something)."""
        total = 0
        if wait and not select.select([self.sock], [], [], wait)[0]:
            return 0
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return total
            except ConnectionResetError:
                self.reset = True
                return total
            if not data:
                return total
            self.received += data
            total += len(data)

    def socket_writable(self) -> bool:
        server_sock = getattr(self.transport, "socket", None)
        return server_sock is not None and bool(select.select([], [server_sock], [], 0)[1])

    def run(self, read: bool = True, patience: float = 1.0) -> None:
        """Play the reactor (and a reading client) until the response is done or stuck
        (nothing to write, nothing read for C{patience} seconds)."""
        for _ in range(100_000):
            if self.outcome and not self.waiting():
                break
            progressed = self.read() if read else 0
            if self.waiting() and self.socket_writable():
                self.writable()
                progressed = 1
            self.reactor.advance(0)
            if not progressed and not (read and self.read(wait=patience)):
                break
        if read:
            while self.read(wait=0.05):
                pass

    def head(self) -> bytes:
        return bytes(self.received.partition(b"\r\n\r\n")[0])

    def status(self) -> int:
        return int(self.head().split(b" ", 2)[1])

    def header(self, name: bytes) -> bytes | None:
        for line in self.head().split(b"\r\n")[1:]:
            key, _, value = line.partition(b": ")
            if key.lower() == name.lower():
                return value
        return None

    def body(self) -> bytes:
        return bytes(self.received.partition(b"\r\n\r\n")[2])

    def close(self) -> None:
        self.sock.close()
        if getattr(self.transport, "socket", None) is not None:
            self.transport.connectionLost(Failure(ConnectionDone("test over")))


class SendfileCalls:
    """Wraps os.sendfile (and os.pread) to see how a body was sent."""

    def __init__(
        self, case: SynchronousTestCase, fail: OSError | None = None, fail_on: int = 1
    ) -> None:
        self.calls: list[tuple[int, int, int | None]] = []  # offset, count, sent (None: EAGAIN)
        self.preads = 0
        self._sendfile = os.sendfile
        self._pread = os.pread
        self._fail = fail
        self._fail_on = fail_on
        case.patch(os, "sendfile", self.sendfile)
        case.patch(os, "pread", self.pread)

    def sendfile(self, out_fd: int, in_fd: int, offset: int, count: int) -> int:
        if self._fail is not None and len(self.calls) + 1 >= self._fail_on:
            self.calls.append((offset, count, -1))
            raise self._fail
        try:
            sent = self._sendfile(out_fd, in_fd, offset, count)
        except BlockingIOError:
            self.calls.append((offset, count, None))
            raise
        self.calls.append((offset, count, sent))
        return sent

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        self.preads += 1
        return self._pread(fd, count, offset)

    @property
    def sent(self) -> int:
        return sum(s for _, _, s in self.calls if s is not None and s > 0)

    @property
    def socket_full(self) -> int:
        """Calls that found the socket full: EAGAIN, or fewer bytes than asked."""
        return sum(1 for _, count, s in self.calls if s is None or 0 <= s < count)


class SendfileTests(CacheTestCase):
    def blob(self, size: int) -> tuple[bytes, str]:
        data = random.Random(size).randbytes(size)
        return data, self.h.put(data)

    def test_a_committed_blob_goes_out_with_sendfile(self) -> None:
        data, digest = self.blob(3 * 1024 * 1024 + 17)
        calls = SendfileCalls(self)
        client = SocketClient(self).served(self.cache, digest)
        client.run()
        self.assertEqual(client.status(), 200)
        self.assertEqual(client.header(b"content-length"), b"%d" % len(data))
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])
        self.assertEqual((calls.sent, calls.preads), (len(data), 0))
        self.assertEqual(client.request.sentLength, len(data))  # what the access log shows
        self.assertEqual(self.cache.bytes_served, len(data))
        self.assertEqual(self.cache.stats()["pinned"], 0)
        self.assertIsNone(client.request.producer)
        self.assertFalse(client.transport.producerPaused)

    def test_the_headers_are_flushed_before_the_first_sendfile(self) -> None:
        data, digest = self.blob(100_000)
        calls = SendfileCalls(self)
        client = SocketClient(self)
        client.transport.write(b"<the previous response's tail>")
        client.served(self.cache, digest)
        self.assertEqual(calls.calls, [])  # both still in the transport's buffer
        self.assertTrue(client.waiting())
        client.run()
        self.assertTrue(client.received.startswith(b"<the previous response's tail>HTTP/1.1 200"))
        self.assertEqual(client.body(), data)

    def test_a_full_socket_waits_for_a_writable_event(self) -> None:
        data, digest = self.blob(4 * 1024 * 1024)
        calls = SendfileCalls(self)
        client = SocketClient(self, buffer_size=64 * 1024).served(self.cache, digest)
        client.run(read=False)  # the client reads nothing: the socket fills up
        self.assertGreater(calls.sent, 0)
        self.assertLess(calls.sent, len(data))
        self.assertGreaterEqual(calls.socket_full, 1)
        self.assertTrue(client.waiting())
        self.assertTrue(client.transport.producerPaused)
        self.assertEqual(client.outcome, [])
        self.assertEqual(self.cache.stats()["pinned"], 1)
        self.assertEqual(client.request.sentLength, calls.sent)
        client.run()  # now it reads
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])
        self.assertEqual(calls.preads, 0)

    def test_a_fast_client_still_yields_to_the_reactor(self) -> None:
        data, digest = self.blob(1024 * 1024)
        self.patch(senders_module, "SENDFILE_BUDGET", 64 * 1024)
        calls = SendfileCalls(self)
        client = SocketClient(self).served(self.cache, digest)
        client.run()
        self.assertEqual(client.body(), data)
        self.assertLessEqual(max(count for _, count, _ in calls.calls), 64 * 1024)
        self.assertGreaterEqual(client.writable_events, len(data) // (64 * 1024))

    def test_range(self) -> None:
        data, digest = self.blob(2 * 1024 * 1024)
        calls = SendfileCalls(self)
        client = SocketClient(self).served(self.cache, digest, (1000, 1_500_000))
        client.run()
        self.assertEqual(client.status(), 206)
        self.assertEqual(client.header(b"content-range"), b"bytes 1000-1500000/%d" % len(data))
        self.assertEqual(client.body(), data[1000:1_500_001])
        self.assertEqual(calls.calls[0][0], 1000)
        self.assertEqual(calls.sent, 1_499_001)
        self.assertEqual(client.request.sentLength, 1_499_001)

    def test_head_sends_no_body(self) -> None:
        _, digest = self.blob(100_000)
        calls = SendfileCalls(self)
        client = SocketClient(self, method=b"HEAD").served(self.cache, digest)
        client.run()
        self.assertEqual(client.header(b"content-length"), b"100000")
        self.assertEqual(client.body(), b"")
        self.assertEqual(calls.calls, [])
        self.assertEqual(client.outcome, [True])

    def test_an_empty_blob(self) -> None:
        digest = self.h.put(b"")
        calls = SendfileCalls(self)
        client = SocketClient(self).served(self.cache, digest)
        client.run()
        self.assertEqual(client.header(b"content-length"), b"0")
        self.assertEqual(client.outcome, [True])
        self.assertEqual(calls.calls, [])

    def test_a_client_gone_mid_body(self) -> None:
        _, digest = self.blob(4 * 1024 * 1024)
        SendfileCalls(self)
        client = SocketClient(self, buffer_size=64 * 1024).served(self.cache, digest)
        client.run(read=False)
        self.assertTrue(client.waiting())
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()  # a reset
        for _ in range(10):
            if client.waiting():
                client.writable()
            client.reactor.advance(0)
        self.assertEqual(client.outcome, [False])
        self.assertEqual(self.cache.stats()["pinned"], 0)
        self.assertIsNone(getattr(client.transport, "socket", None))  # closed

    def test_a_broken_pipe_aborts_the_connection(self) -> None:
        data, digest = self.blob(4 * 1024 * 1024)
        calls = SendfileCalls(self, fail=BrokenPipeError(errno.EPIPE, "Broken pipe"), fail_on=2)
        client = SocketClient(self, buffer_size=64 * 1024).served(self.cache, digest)
        client.run(read=False)
        self.assertEqual(len(calls.calls), 1)
        client.read()  # room for more: the next writable event resumes the sender
        client.writable()
        self.assertEqual(calls.calls[-1][2], -1)
        self.assertEqual(client.outcome, [False])
        self.assertTrue(client.transport._aborting)
        client.reactor.advance(0)
        self.assertIsNone(getattr(client.transport, "socket", None))
        self.assertEqual(self.cache.stats()["pinned"], 0)
        client.read(wait=0.05)
        self.assertLess(len(client.body()), len(data))

    def test_a_read_error_aborts_the_response(self) -> None:
        _, digest = self.blob(1024 * 1024)
        SendfileCalls(self, fail=OSError(errno.EIO, "Input/output error"))
        client = SocketClient(self).served(self.cache, digest)
        client.run()
        self.assertEqual(client.outcome, [False])
        self.assertTrue(client.reset)  # aborted: never a short body that looks complete
        self.assertEqual(self.cache.stats()["pinned"], 0)

    def test_a_file_shorter_than_its_size_aborts_the_response(self) -> None:
        data, digest = self.blob(4 * 1024 * 1024)
        calls = SendfileCalls(self)
        client = SocketClient(self, buffer_size=64 * 1024).served(self.cache, digest)
        client.run(read=False)
        os.truncate(self.h.store.blob_path(digest), calls.sent)
        client.run()
        self.assertEqual(client.outcome, [False])
        self.assertEqual(calls.calls[-1][2], 0)
        self.assertTrue(client.reset)
        self.assertLess(len(client.body()), len(data))

    def test_a_connection_lost_while_waiting(self) -> None:
        _, digest = self.blob(4 * 1024 * 1024)
        client = SocketClient(self, buffer_size=64 * 1024).served(self.cache, digest)
        client.run(read=False)
        self.assertTrue(client.waiting())
        client.transport.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual(client.outcome, [False])
        self.assertEqual(self.cache.stats()["pinned"], 0)

    def test_a_file_sendfile_refuses_is_copied(self) -> None:
        data, digest = self.blob(2 * 1024 * 1024)
        calls = SendfileCalls(self, fail=OSError(errno.EINVAL, "Invalid argument"))
        client = SocketClient(self).served(self.cache, digest)
        client.run()
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])
        self.assertEqual(len(calls.calls), 1)
        self.assertGreater(calls.preads, 0)
        self.assertEqual(client.request.sentLength, len(data))

    def test_a_followed_fill_goes_out_with_sendfile_up_to_what_is_written(self) -> None:
        data = random.Random(7).randbytes(300_000)
        up = self.h.upstream(data)
        calls = SendfileCalls(self)
        client = SocketClient(self).served(self.cache, sha256(data))
        up.sends(data[:100_000])
        client.run(patience=0.05)
        self.assertEqual(client.body(), data[:100_000])
        self.assertEqual(client.outcome, [])
        up.sends(data[100_000:])
        client.run(patience=0.05)
        self.assertEqual(client.body(), data[:-1], "the last byte waits for the commit")
        up.ends()
        client.run()
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])
        self.assertEqual(
            [(offset, count) for offset, count, _ in calls.calls],
            [(0, 100_000), (100_000, 199_999), (299_999, 1)],
        )
        self.assertEqual((calls.sent, calls.preads), (len(data), 0))
        self.assertEqual(client.request.sentLength, len(data))

    def test_a_corrupt_followed_fill_never_sends_its_last_byte(self) -> None:
        data = random.Random(8).randbytes(200_000)
        up = self.h.upstream(data, digest=sha256(b"something else"))
        calls = SendfileCalls(self)
        client = SocketClient(self).served(self.cache, sha256(b"something else"))
        up.sends(data)
        client.run(patience=0.05)
        up.ends()
        client.reactor.advance(0)  # the abort closes the socket
        client.read(wait=0.05)
        self.assertEqual(client.outcome, [False])
        self.assertTrue(client.reset, "aborted: a short body never looks complete")
        self.assertEqual(client.body(), data[:-1])
        self.assertEqual(calls.sent, len(data) - 1)

    def test_only_plain_sockets(self) -> None:
        for_request = senders_module.Sendfile.for_request
        self.assertIsNone(for_request(self.h.client().request))  # no socket at all
        client = SocketClient(self)
        self.assertIsNotNone(for_request(client.request))
        client.transport.TLS = True  # after startTLS
        self.assertIsNone(for_request(client.request))
        tls = SocketClient(self)
        directlyProvides(tls.transport, ISSLTransport)
        self.assertIsNone(for_request(tls.request))


class ShapedSendfileTests(CacheTestCase):
    """A client with a bandwidth limit still gets zero-copy sends, each no larger than its
    budget allows, and the body at the limit."""

    def test_a_limited_client_gets_the_body_at_its_rate(self) -> None:
        rate = 1024 * 1024
        data = random.Random(7).randbytes(3 * 1024 * 1024)
        digest = self.h.put(data)
        calls = SendfileCalls(self)
        client = SocketClient(self, rate=rate).served(self.cache, digest)
        while not client.outcome and client.reactor.seconds() < 10:
            client.read()  # a client that reads all it gets
            if client.waiting() and client.socket_writable():
                client.writable()
            client.reactor.advance(0.01)
        client.run()
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])
        self.assertEqual(calls.preads, 0)  # zero-copy all the way
        self.assertLessEqual(max(count for _, count, _ in calls.calls), capacity_for(rate))
        expected = (len(data) - capacity_for(rate)) / rate
        self.assertLess(abs(client.reactor.seconds() - expected), 0.1 * expected)
        self.assertEqual(client.request.sentLength, len(data))
        self.assertFalse(client.request.budget.busy)
