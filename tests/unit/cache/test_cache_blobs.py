"""The blob cache: fills, followers, serving, eviction and restarts.

As in test_relay: clients are real twisted.web Requests on an HTTPChannel over a
StringTransport (which can also push back like a TCP socket with a send buffer),
the upstream is a fake IResponse whose body the test feeds itself, the clock is a
Clock and the store is a real temporary directory. The zero-copy (sendfile) tests
need a real socket: a loopback TCP connection under Twisted's own tcp.Server, with
the test playing the reactor (L{SocketClient}).
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import select
import shutil
import socket
import struct
import tempfile
from pathlib import Path

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import Site
from zope.interface import directlyProvides

from dockerproxy.cache import blobs as blobs_module
from dockerproxy.cache.blobs import (
    READ_CHUNK,
    TURN_BUDGET,
    BlobCache,
    Fill,
    FillInProgress,
    TooLarge,
)
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.digests import Digest, of, parse
from tests.unit.fakes import Capture, FakeResponse, lost, sync_disk

IDLE = 5.0
BODY = bytes(range(256)) * 4  # 1 KiB


def sha256(data: bytes) -> Digest:
    return of(data)




def dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body's data, and whether its terminating chunk arrived."""
    data = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return data, True
        data += rest[:size]
        body = rest[size + 2:]
    return data, False


# --------------------------------------------------------------------------- the upstream side




class Upstream:
    """One fill in progress and the upstream connection feeding it."""

    def __init__(self, cache: BlobCache, digest: Digest, length: int | object) -> None:
        self.transport = StringTransport()
        self.response = FakeResponse(length, self.transport)
        self.fill = cache.start_fill(digest, self.response)
        self.outcome: list[object] = []
        self.fill.done.addBoth(self.outcome.append)

    def sends(self, data: bytes) -> None:
        assert self.response.protocol is not None
        self.response.protocol.dataReceived(data)

    def ends(self, reason: Failure | None = None) -> None:
        assert self.response.protocol is not None
        self.response.protocol.connectionLost(reason or Failure(ResponseDone()))


# --------------------------------------------------------------------------- the client side


class ClientTransport(StringTransport):
    """The client's socket; with C{buffer_size}, it pauses its producer as TCP would."""

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
        if self.buffer_size is not None and self.producer is not None \
                and not self.paused_producer and self.unsent > self.buffer_size:
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


class Client:
    """One client connection with one request for a blob, rendered by nobody yet."""

    def __init__(self, clock: Clock, method: bytes = b"GET", headers: bytes = b"",
                 buffer_size: int | None = None) -> None:
        resource = Capture()
        site = Site(resource, reactor=clock)
        self.protocol = site.buildProtocol(None)
        self.transport = ClientTransport(buffer_size)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(method + b" /v2/a/blobs/x HTTP/1.1\r\nHost: mirror\r\n"
                                   + headers + b"\r\n")
        self.request = resource.requests[0]
        self.channel = self.transport.producer
        self.outcome: list[object] = []

    def served(self, cache: BlobCache, digest: Digest,
               byte_range: tuple[int, int | None] | None = None) -> Client:
        cache.serve(self.request, digest, byte_range).addBoth(self.outcome.append)
        return self

    def goes_away(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone("client closed")))

    def status(self) -> int:
        return int(self.transport.value().split(b" ", 2)[1])

    def header(self, name: bytes) -> bytes | None:
        head = self.transport.value().partition(b"\r\n\r\n")[0]
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b": ")
            if key.lower() == name.lower():
                return value
        return None

    def body(self) -> bytes:
        return self.transport.value().partition(b"\r\n\r\n")[2]


def temp_root(case: SynchronousTestCase) -> Path:
    root = Path(tempfile.mkdtemp(prefix="blobcache-"))
    case.addCleanup(shutil.rmtree, root, True)
    return root


class Harness:
    """A started cache over a real directory, with a Clock."""

    def __init__(self, root: Path, max_size: int | None = None, clock: Clock | None = None) -> None:
        self.root = root
        self.clock = clock or Clock()
        self.store = FilesystemStore(root, fsync=False)
        self.cache = BlobCache(self.store, self.clock, max_size, disk=sync_disk(),
                               idle_timeout=IDLE)
        self.cache.start()

    def upstream(self, data: bytes, length: int | object | None = None,
                 digest: Digest | None = None) -> Upstream:
        return Upstream(self.cache, digest or sha256(data), len(data) if length is None else length)

    def put(self, data: bytes) -> Digest:
        """A committed blob, filled the normal way."""
        upstream = self.upstream(data)
        upstream.sends(data)
        upstream.ends()
        assert upstream.outcome == [True], upstream.outcome
        self.clock.advance(1)
        return sha256(data)

    def client(self, **kwargs: object) -> Client:
        return Client(self.clock, **kwargs)  # type: ignore[arg-type]

    def tmp_files(self) -> list[Path]:
        return list((self.root / "tmp").iterdir())


class CacheTestCase(SynchronousTestCase):
    max_size: int | None = None

    def setUp(self) -> None:
        self.h = Harness(temp_root(self), self.max_size)
        self.cache = self.h.cache


# --------------------------------------------------------------------------- fills


class FillTests(CacheTestCase):
    def test_a_verified_fill_is_committed(self) -> None:
        up = self.h.upstream(BODY)
        self.assertIs(self.cache.fill_for(sha256(BODY)), up.fill)
        up.sends(BODY[:100])
        self.assertIsNone(self.cache.lookup(sha256(BODY)))
        up.sends(BODY[100:])
        up.ends()
        self.assertEqual(up.outcome, [True])
        blob = self.cache.lookup(sha256(BODY))
        assert blob is not None
        self.assertEqual((blob.digest, blob.size), (sha256(BODY), len(BODY)))
        self.assertEqual(blob.path.read_bytes(), BODY)
        self.assertIsNone(self.cache.fill_for(sha256(BODY)))
        self.assertEqual(self.h.tmp_files(), [])
        self.assertEqual((self.cache.fills, self.cache.failed_fills), (1, 0))

    def test_the_partial_grows_as_bytes_arrive(self) -> None:
        up = self.h.upstream(BODY)
        up.sends(BODY[:300])
        self.assertEqual(up.fill.path.read_bytes(), BODY[:300])
        self.assertEqual(up.fill.written, 300)

    def test_unknown_length(self) -> None:
        up = self.h.upstream(BODY, length=UNKNOWN_LENGTH)
        up.sends(BODY)
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertIsNotNone(self.cache.lookup(sha256(BODY)))

    def test_close_delimited_body(self) -> None:
        up = self.h.upstream(BODY, length=UNKNOWN_LENGTH)
        up.sends(BODY)
        up.ends(Failure(PotentialDataLoss()))
        self.assertEqual(up.outcome, [True])

    def test_sha512(self) -> None:
        digest = of(BODY, "sha512")
        up = self.h.upstream(BODY, digest=digest)
        up.sends(BODY)
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertIsNotNone(self.cache.lookup(digest))

    def test_empty_blob(self) -> None:
        up = self.h.upstream(b"")
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertEqual(self.cache.lookup(sha256(b"")).size, 0)  # type: ignore[union-attr]

    def test_the_fill_never_pauses_the_upstream(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        client.channel.pauseProducing()
        up.sends(BODY[:500])
        self.assertEqual(up.transport.producerState, "producing")
        self.assertEqual(up.fill.written, 500)

    def test_one_fill_per_digest(self) -> None:
        self.h.upstream(BODY)
        with self.assertRaises(FillInProgress):
            self.h.upstream(BODY)

    def test_a_digest_the_cache_cannot_verify_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            self.h.upstream(BODY, digest=parse("sha1:" + hashlib.sha1(BODY).hexdigest()))
        self.assertEqual(self.h.tmp_files(), [])

    def test_only_a_200_fills(self) -> None:
        response = FakeResponse(3, StringTransport(), code=206)
        with self.assertRaises(ValueError):
            self.cache.start_fill(sha256(b"abc"), response)
        self.assertIsNone(self.cache.fill_for(sha256(b"abc")))

    def test_a_body_delivered_at_once(self) -> None:
        """Twisted delivers a body it has already buffered inside deliverBody."""

        class Buffered(FakeResponse):
            def deliverBody(self, protocol: Fill) -> None:
                super().deliverBody(protocol)
                protocol.dataReceived(BODY)
                protocol.connectionLost(Failure(ResponseDone()))

        fill = self.cache.start_fill(sha256(BODY), Buffered(len(BODY), StringTransport()))
        self.assertTrue(self.successResultOf(fill.done))
        self.assertIsNone(self.cache.fill_for(sha256(BODY)))
        self.assertEqual(self.cache.lookup(sha256(BODY)).size, len(BODY))  # type: ignore[union-attr]
        self.assertEqual(self.cache.stats()["pinned"], 0)

    def test_a_new_fill_after_a_failed_one(self) -> None:
        first = self.h.upstream(BODY)
        first.ends(lost())
        second = self.h.upstream(BODY)
        second.sends(BODY)
        second.ends()
        self.assertEqual((first.outcome, second.outcome), ([False], [True]))


class FailedFillTests(CacheTestCase):
    def assert_nothing_cached(self, up: Upstream) -> None:
        self.assertEqual(up.outcome, [False])
        self.assertIsNone(self.cache.lookup(sha256(BODY)))
        self.assertIsNone(self.cache.fill_for(sha256(BODY)))
        self.assertFalse(up.fill.path.exists())
        self.assertEqual(self.h.tmp_files(), [])
        self.assertEqual(list((self.h.root / "blobs").rglob("*/*/*")), [])
        self.assertEqual(self.cache.failed_fills, 1)
        self.assertEqual(self.cache.used_bytes, 0)

    def assert_aborted(self, client: Client, sent: bytes) -> None:
        self.assertTrue(client.transport.aborted)
        self.assertFalse(client.request.finished)
        self.assertEqual(client.outcome, [False])
        self.assertEqual(client.body(), sent)
        self.assertIsNone(client.request.producer)

    def test_digest_mismatch(self) -> None:
        corrupt = BODY[:-1] + b"X"
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(corrupt)
        up.ends()
        self.assert_nothing_cached(up)
        self.assertIn("digest mismatch", up.fill.failure or "")
        # Everything but the final byte went out; then the connection was dropped.
        self.assert_aborted(client, corrupt[:-1])

    def test_truncated_body(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:600])
        up.ends(lost())
        self.assert_nothing_cached(up)
        self.assert_aborted(client, BODY[:600])

    def test_clean_end_short_of_the_length(self) -> None:
        up = self.h.upstream(BODY, length=len(BODY) + 1)
        up.sends(BODY)  # the right digest, but not the length announced
        up.ends()
        self.assert_nothing_cached(up)
        self.assertIn("ended after 1024 bytes", up.fill.failure or "")

    def test_potential_data_loss_with_a_known_length(self) -> None:
        up = self.h.upstream(BODY)
        up.sends(BODY)
        up.ends(Failure(PotentialDataLoss()))
        self.assert_nothing_cached(up)

    def test_truncated_body_of_unknown_length(self) -> None:
        up = self.h.upstream(BODY, length=UNKNOWN_LENGTH)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:600])
        up.ends(lost())
        self.assert_nothing_cached(up)
        self.assertTrue(client.transport.aborted)
        data, terminated = dechunk(client.body())
        self.assertEqual((data, terminated), (BODY[:599], False))

    def test_more_bytes_than_announced(self) -> None:
        up = self.h.upstream(BODY, length=len(BODY) - 1)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY)
        self.assertEqual(up.transport.producerState, "stopped")
        up.ends(lost())  # the stopped connection reports its loss later
        self.assert_nothing_cached(up)
        self.assert_aborted(client, b"")

    def test_idle_timeout(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        self.h.clock.advance(IDLE - 0.1)
        up.sends(BODY[100:200])
        self.h.clock.advance(IDLE - 0.1)
        self.assertEqual(up.outcome, [])
        self.h.clock.advance(0.1)
        self.assertEqual(up.transport.producerState, "stopped")
        self.assert_nothing_cached(up)
        self.assert_aborted(client, BODY[:200])
        up.ends(lost())  # later news from the stopped connection changes nothing
        self.assertEqual(self.cache.failed_fills, 1)

    def test_no_idle_timer_after_the_fill(self) -> None:
        up = self.h.upstream(BODY)
        up.sends(BODY)
        up.ends()
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_write_error(self) -> None:
        up = self.h.upstream(BODY)

        def disk_full(data: bytes) -> None:
            raise OSError(28, "No space left on device")

        up.fill._partial.write = disk_full  # type: ignore[method-assign]
        up.sends(BODY)
        self.assertEqual(up.transport.producerState, "stopped")
        self.assert_nothing_cached(up)

    def test_stop_abandons_fills(self) -> None:
        up = self.h.upstream(BODY)
        up.sends(BODY[:10])
        self.cache.stop()
        self.assert_nothing_cached(up)
        self.assertEqual(up.transport.producerState, "stopped")


# --------------------------------------------------------------------------- following a fill


class FollowTests(CacheTestCase):
    def test_bytes_reach_the_follower_before_the_fill_completes(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        self.assertEqual(client.body(), BODY[:100])
        self.assertEqual(client.header(b"content-length"), b"%d" % len(BODY))
        up.sends(BODY[100:500])
        self.assertEqual(client.body(), BODY[:500])

    def test_the_final_byte_waits_for_the_commit(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY)
        self.assertEqual(client.body(), BODY[:-1])
        self.assertFalse(client.request.finished)
        self.assertEqual(client.outcome, [])
        up.ends()
        self.assertEqual(client.body(), BODY)
        self.assertTrue(client.request.finished)
        self.assertEqual(client.outcome, [True])
        self.assertFalse(client.transport.aborted)

    def test_two_followers_the_second_joining_midway(self) -> None:
        up = self.h.upstream(BODY)
        first = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:400])
        fill = self.cache.fill_for(sha256(BODY))
        self.assertIs(fill, up.fill)
        second = self.h.client().served(self.cache, sha256(BODY))
        self.assertEqual(second.body(), BODY[:400])
        up.sends(BODY[400:])
        up.ends()
        for client in (first, second):
            self.assertEqual(client.body(), BODY)
            self.assertEqual(client.outcome, [True])
        self.assertEqual(self.cache.coalesced, 2)
        self.assertEqual(self.cache.fills, 1)

    def test_a_follower_leaving_does_not_stop_the_fill(self) -> None:
        up = self.h.upstream(BODY)
        leaving = self.h.client().served(self.cache, sha256(BODY))
        staying = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        leaving.goes_away()
        self.assertEqual(leaving.outcome, [False])
        self.assertEqual(up.transport.producerState, "producing")
        self.assertEqual(up.fill.followers, 1)
        up.sends(BODY[100:])
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertEqual(staying.body(), BODY)
        self.assertEqual(leaving.body(), BODY[:100])
        self.assertEqual(self.cache.stats()["pinned"], 0)

    def test_the_fill_completes_when_every_follower_has_left(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        client.goes_away()
        up.sends(BODY[100:])
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertIsNotNone(self.cache.lookup(sha256(BODY)))

    def test_transport_stop_stops_only_that_follower(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        client.channel.stopProducing()  # what a TCP transport does when it loses the connection
        self.assertEqual(client.outcome, [False])
        up.sends(BODY)
        self.assertEqual(client.body(), b"")
        self.assertEqual(up.transport.producerState, "producing")

    def test_unknown_length_is_chunked_and_holds_back_the_last_byte(self) -> None:
        up = self.h.upstream(BODY, length=UNKNOWN_LENGTH)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        self.assertEqual(dechunk(client.body()), (BODY[:99], False))
        up.sends(BODY[100:])
        self.assertEqual(dechunk(client.body()), (BODY[:-1], False))
        up.ends()
        self.assertEqual(dechunk(client.body()), (BODY, True))
        self.assertEqual(client.outcome, [True])

    def test_a_range_waits_for_its_bytes(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY), (500, 599))
        up.sends(BODY[:450])
        self.assertEqual(client.body(), b"")
        up.sends(BODY[450:550])
        self.assertEqual(client.body(), BODY[500:550])
        up.sends(BODY[550:700])
        self.assertEqual(client.body(), BODY[500:599])  # the range's last byte waits too
        up.sends(BODY[700:])
        up.ends()
        self.assertEqual(client.status(), 206)
        self.assertEqual(client.header(b"content-range"), b"bytes 500-599/1024")
        self.assertEqual(client.body(), BODY[500:600])
        self.assertEqual(client.outcome, [True])

    def test_a_range_of_unknown_length_waits_for_the_commit(self) -> None:
        up = self.h.upstream(BODY, length=UNKNOWN_LENGTH)
        client = self.h.client().served(self.cache, sha256(BODY), (1000, None))
        up.sends(BODY)
        self.assertEqual(client.transport.value(), b"")
        up.ends()
        self.assertEqual(client.status(), 206)
        self.assertEqual(client.header(b"content-range"), b"bytes 1000-1023/1024")
        self.assertEqual(client.body(), BODY[1000:])

    def test_head_of_a_fill(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client(method=b"HEAD").served(self.cache, sha256(BODY))
        self.assertEqual(client.header(b"content-length"), b"1024")
        self.assertEqual(client.body(), b"")
        self.assertEqual(client.outcome, [True])
        up.sends(BODY)
        up.ends()
        self.assertEqual(client.body(), b"")


# --------------------------------------------------------------------------- committed blobs


class ServeTests(CacheTestCase):
    def test_full_body(self) -> None:
        digest = self.h.put(BODY)
        client = self.h.client().served(self.cache, digest)
        self.assertEqual(client.status(), 200)
        self.assertEqual(client.header(b"content-length"), b"1024")
        self.assertEqual(client.body(), BODY)
        self.assertTrue(client.request.finished)
        self.assertEqual(client.outcome, [True])
        self.assertEqual(self.cache.bytes_served, len(BODY))
        self.assertIsNone(client.request.producer)

    def test_range(self) -> None:
        digest = self.h.put(BODY)
        client = self.h.client().served(self.cache, digest, (10, 19))
        self.assertEqual(client.status(), 206)
        self.assertEqual(client.header(b"content-range"), b"bytes 10-19/1024")
        self.assertEqual(client.header(b"content-length"), b"10")
        self.assertEqual(client.body(), BODY[10:20])

    def test_open_and_overlong_ranges_end_at_the_blob_end(self) -> None:
        digest = self.h.put(BODY)
        for byte_range in [(1000, None), (1000, 5000)]:
            client = self.h.client().served(self.cache, digest, byte_range)
            self.assertEqual(client.header(b"content-range"), b"bytes 1000-1023/1024")
            self.assertEqual(client.body(), BODY[1000:])

    def test_unsatisfiable_range(self) -> None:
        digest = self.h.put(BODY)
        client = self.h.client().served(self.cache, digest, (1024, None))
        self.assertEqual(client.status(), 416)
        self.assertEqual(client.header(b"content-range"), b"bytes */1024")
        self.assertEqual(client.body(), b"")
        self.assertTrue(client.request.finished)

    def test_bad_range(self) -> None:
        digest = self.h.put(BODY)
        with self.assertRaises(ValueError):
            self.cache.serve(self.h.client().request, digest, (5, 4))

    def test_head(self) -> None:
        digest = self.h.put(BODY)
        client = self.h.client(method=b"HEAD").served(self.cache, digest)
        self.assertEqual(client.header(b"content-length"), b"1024")
        self.assertEqual(client.body(), b"")
        self.assertEqual(client.outcome, [True])

    def test_a_client_gone_before_serve(self) -> None:
        digest = self.h.put(BODY)
        client = self.h.client()
        client.goes_away()
        client.served(self.cache, digest)
        self.assertEqual(client.outcome, [False])
        self.assertEqual(client.transport.value(), b"")
        self.assertEqual(self.cache.stats()["pinned"], 0)

    def test_unknown_digest(self) -> None:
        with self.assertRaises(KeyError):
            self.cache.serve(self.h.client().request, sha256(b"nothing"))

    def test_a_vanished_file_is_forgotten(self) -> None:
        digest = self.h.put(BODY)
        self.h.store.blob_path(digest).unlink()
        with self.assertRaises(KeyError):
            self.cache.serve(self.h.client().request, digest)
        self.assertNotIn(digest, self.cache)

    def test_reads_are_chunked(self) -> None:
        data = b"x" * (READ_CHUNK * 2 + 10)
        digest = self.h.put(data)
        client = self.h.client().served(self.cache, digest)
        self.assertEqual(client.body(), data)
        self.assertLessEqual(max(client.transport.writes), READ_CHUNK)
        self.assertGreaterEqual(len(client.transport.writes), 3)

    def test_hits_and_misses(self) -> None:
        digest = self.h.put(BODY)
        self.cache.lookup(digest)
        self.cache.lookup(sha256(b"other"))
        self.cache.lookup(digest)
        self.assertEqual((self.cache.hits, self.cache.misses), (2, 1))


class BackpressureTests(CacheTestCase):
    def test_a_full_client_buffer_stops_reading(self) -> None:
        data = b"y" * (READ_CHUNK * 3)
        digest = self.h.put(data)
        client = self.h.client(buffer_size=1024).served(self.cache, digest)
        self.assertEqual(len(client.body()), READ_CHUNK)
        self.assertEqual(self.cache.bytes_served, READ_CHUNK)
        self.h.clock.advance(10)  # nothing happens by itself while paused
        self.assertEqual(len(client.body()), READ_CHUNK)
        client.transport.drain()
        self.assertEqual(len(client.body()), READ_CHUNK * 2)
        client.transport.drain()
        client.transport.drain()
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])

    def test_pause_and_resume_a_follower(self) -> None:
        up = self.h.upstream(BODY)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:100])
        client.channel.pauseProducing()
        up.sends(BODY[100:])
        up.ends()
        self.assertEqual(client.body(), BODY[:100])
        self.assertFalse(client.request.finished)
        client.channel.resumeProducing()
        self.assertEqual(client.body(), BODY)
        self.assertEqual(client.outcome, [True])

    def test_a_request_starting_while_the_socket_is_full_starts_paused(self) -> None:
        digest = self.h.put(BODY)
        client = self.h.client()
        client.channel.pauseProducing()  # the previous response still fills the socket
        client.served(self.cache, digest)
        self.assertEqual(client.body(), b"")
        client.channel.resumeProducing()
        self.assertEqual(client.body(), BODY)

    def test_a_transport_that_never_pushes_back_gets_a_budget_per_turn(self) -> None:
        data = b"z" * (TURN_BUDGET + READ_CHUNK)
        digest = self.h.put(data)
        client = self.h.client().served(self.cache, digest)
        self.assertEqual(len(client.body()), TURN_BUDGET)
        self.h.clock.advance(0)
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])

    def test_a_client_leaving_mid_body_releases_the_blob(self) -> None:
        data = b"y" * (READ_CHUNK * 3)
        digest = self.h.put(data)
        client = self.h.client(buffer_size=1024).served(self.cache, digest)
        client.goes_away()
        self.assertEqual(client.outcome, [False])
        self.assertEqual(self.cache.stats()["pinned"], 0)
        client.transport.drain()
        self.assertEqual(len(client.body()), READ_CHUNK)


# --------------------------------------------------------------------------- zero-copy sends


class SocketClient:
    """One blob request over a real loopback TCP connection, driven by hand.

    The server side is Twisted's own C{tcp.Server} over the accepted socket, with a
    L{MemoryReactorClock} as its reactor: the test plays the reactor, calling the
    transport's C{doWrite} while it asks for writable events. The client side is a
    plain non-blocking socket that the test reads (or does not read) itself.
    """

    def __init__(self, case: SynchronousTestCase, method: bytes = b"GET",
                 buffer_size: int | None = None) -> None:
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
        self.protocol = Site(resource, reactor=self.reactor).buildProtocol(address)
        self.transport = tcp.Server(server_sock, self.protocol, address, None, 1, self.reactor)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(method + b" /v2/a/blobs/x HTTP/1.1\r\nHost: mirror\r\n\r\n")
        self.request = resource.requests[0]
        self.received = bytearray()
        self.outcome: list[object] = []
        self.writable_events = 0
        self.reset = False
        case.addCleanup(self.close)

    def served(self, cache: BlobCache, digest: Digest,
               byte_range: tuple[int, int | None] | None = None) -> SocketClient:
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

    def __init__(self, case: SynchronousTestCase, fail: OSError | None = None,
                 fail_on: int = 1) -> None:
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
        self.patch(blobs_module, "SENDFILE_BUDGET", 64 * 1024)
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

    def test_a_followed_fill_is_copied(self) -> None:
        data = random.Random(7).randbytes(300_000)
        up = self.h.upstream(data)
        calls = SendfileCalls(self)
        client = SocketClient(self).served(self.cache, sha256(data))
        up.sends(data[:100_000])
        client.run(patience=0.05)
        self.assertEqual(client.body(), data[:100_000])
        up.sends(data[100_000:])
        up.ends()
        client.run()
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])
        self.assertEqual(calls.calls, [])

    def test_only_plain_sockets(self) -> None:
        for_request = blobs_module._Sendfile.for_request
        self.assertIsNone(for_request(self.h.client().request))  # no socket at all
        client = SocketClient(self)
        self.assertIsNotNone(for_request(client.request))
        client.transport.TLS = True  # after startTLS
        self.assertIsNone(for_request(client.request))
        tls = SocketClient(self)
        directlyProvides(tls.transport, ISSLTransport)
        self.assertIsNone(for_request(tls.request))


# --------------------------------------------------------------------------- eviction


class EvictionTests(CacheTestCase):
    max_size = 3000

    def blob(self, n: int) -> bytes:
        return bytes([n]) * 1000

    def test_least_recently_used_goes_first(self) -> None:
        a, b, c = (self.h.put(self.blob(n)) for n in (1, 2, 3))
        self.cache.lookup(a)
        d = self.h.put(self.blob(4))
        self.assertEqual(self.cache.lru_order(), [c, a, d])
        self.assertFalse(self.h.store.blob_path(b).exists())
        self.assertIsNone(self.cache.lookup(b))
        self.assertEqual(self.cache.evictions, 1)
        self.assertEqual(self.cache.used_bytes, 3000)
        self.assertEqual(self.h.store.used_bytes(), 3000)

    def test_removals_are_reported(self) -> None:
        removed: list[str] = []
        self.cache.on_removed = removed.append
        a, b, c = (self.h.put(self.blob(n)) for n in (1, 2, 3))
        self.h.put(self.blob(4))
        self.assertEqual(removed, [a])
        self.h.store.blob_path(c).unlink()  # gone from the disk: found out when served
        with self.assertRaises(KeyError):
            self.h.client().served(self.cache, c)
        self.assertEqual(removed, [a, c])
        self.assertEqual(self.cache.lru_order(), [b, sha256(self.blob(4))])

    def test_a_fill_of_known_length_makes_room_when_it_starts(self) -> None:
        a, b, c = (self.h.put(self.blob(n)) for n in (1, 2, 3))
        self.h.upstream(self.blob(4))
        self.assertNotIn(a, self.cache)
        self.assertEqual(self.cache.lru_order(), [b, c])

    def test_a_fill_of_unknown_length_makes_room_after_its_commit(self) -> None:
        _, b, c = (self.h.put(self.blob(n)) for n in (1, 2, 3))
        up = self.h.upstream(self.blob(4), length=UNKNOWN_LENGTH)
        self.assertEqual(len(self.cache), 3)
        up.sends(self.blob(4))
        up.ends()
        self.assertEqual(self.cache.lru_order(), [b, c, sha256(self.blob(4))])

    def paused_client(self, digest: Digest) -> Client:
        """A client whose socket is full: the blob stays pinned until it drains."""
        client = self.h.client()
        client.channel.pauseProducing()
        return client.served(self.cache, digest)

    def test_a_blob_being_served_is_not_evicted(self) -> None:
        a, b, c = (self.h.put(self.blob(n)) for n in (1, 2, 3))
        client = self.paused_client(a)
        d = self.h.put(self.blob(4))
        self.assertIn(a, self.cache)  # the least recently used, but pinned
        self.assertNotIn(b, self.cache)
        self.assertEqual(self.cache.lru_order(), [a, c, d])
        client.channel.resumeProducing()
        self.assertEqual(client.body(), self.blob(1))
        self.assertEqual(client.outcome, [True])

    def test_a_blob_paused_mid_body_is_not_evicted(self) -> None:
        data = b"m" * (READ_CHUNK + 1000)
        self.cache.max_size = len(data) + 1500
        a = self.h.put(data)
        client = self.h.client(buffer_size=1024).served(self.cache, a)
        self.assertEqual(len(client.body()), READ_CHUNK)
        b = self.h.put(self.blob(2))
        c = self.h.put(self.blob(3))
        self.assertEqual(self.cache.lru_order(), [a, c])
        self.assertNotIn(b, self.cache)
        client.transport.drain()
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])

    def test_the_bound_holds_once_the_pins_are_released(self) -> None:
        a, b = self.h.put(self.blob(1)), self.h.put(self.blob(2))
        first, second = self.paused_client(a), self.paused_client(b)
        data = self.blob(3) * 2
        up = self.h.upstream(data)  # nothing can make room for it now
        follower = self.paused_client(sha256(data))
        up.sends(data)
        up.ends()
        c = sha256(data)
        self.assertEqual(self.cache.used_bytes, 4000)
        self.assertEqual(self.cache.lru_order(), [a, b, c])
        first.channel.resumeProducing()
        self.assertEqual(first.outcome, [True])
        self.assertEqual(self.cache.lru_order(), [b, c])
        self.assertEqual(self.cache.used_bytes, 3000)
        for client in (second, follower):
            client.channel.resumeProducing()
            self.assertEqual(client.outcome, [True])
        self.assertEqual(self.cache.lru_order(), [b, c])
        self.assertEqual(follower.body(), data)

    def test_an_unpinned_new_blob_goes_when_everything_else_is_pinned(self) -> None:
        a, b = self.h.put(self.blob(1)), self.h.put(self.blob(2))
        self.paused_client(a)
        self.paused_client(b)
        c = self.h.put(self.blob(3) * 2)
        self.assertEqual(self.cache.lru_order(), [a, b])
        self.assertFalse(self.h.store.blob_path(c).exists())

    def test_a_blob_larger_than_the_cache_is_never_written(self) -> None:
        a = self.h.put(self.blob(1))
        big = self.blob(9) * 4
        self.assertFalse(self.cache.fits(len(big)))
        self.assertTrue(self.cache.fits(self.max_size))
        with self.assertRaises(TooLarge):
            self.h.upstream(big)
        self.assertIsNone(self.cache.fill_for(sha256(big)))
        self.assertEqual(self.h.tmp_files(), [])
        self.assertEqual((self.cache.fills, self.cache.stats()["pinned"]), (1, 0))  # a's
        self.assertIn(a, self.cache)

    def test_the_cache_stays_under_the_bound(self) -> None:
        for n in range(20):
            self.h.put(bytes([n]) * (300 + 97 * n % 900))
            self.assertLessEqual(self.cache.used_bytes, self.max_size)
            self.assertEqual(self.h.store.used_bytes(), self.cache.used_bytes)
        on_disk = sum(p.stat().st_size for p in (self.h.root / "blobs").rglob("*") if p.is_file())
        self.assertEqual(on_disk, self.cache.used_bytes)

    def test_no_bound(self) -> None:
        self.cache.max_size = None
        for n in range(5):
            self.h.put(self.blob(n))
        self.assertEqual(len(self.cache), 5)


# --------------------------------------------------------------------------- restarts


class RestartTests(SynchronousTestCase):
    def test_a_new_cache_sees_committed_blobs_and_their_order(self) -> None:
        root = temp_root(self)
        first = Harness(root)
        a, b, c = (first.put(bytes([n]) * 100) for n in (1, 2, 3))
        first.cache.lookup(a)
        second = Harness(root, clock=first.clock)
        self.assertEqual(second.cache.lru_order(), [b, c, a])
        self.assertEqual(second.cache.used_bytes, 300)
        client = second.client().served(second.cache, a)
        self.assertEqual(client.body(), bytes([1]) * 100)

    def test_a_restart_with_a_smaller_bound_evicts_the_oldest(self) -> None:
        root = temp_root(self)
        first = Harness(root)
        a, b, c = (first.put(bytes([n]) * 100) for n in (1, 2, 3))
        first.cache.lookup(a)
        second = Harness(root, max_size=200, clock=first.clock)
        self.assertEqual(second.cache.lru_order(), [c, a])
        self.assertFalse(second.store.blob_path(b).exists())

    def test_a_crashed_fill_never_appears(self) -> None:
        root = temp_root(self)
        first = Harness(root)
        up = first.upstream(BODY)
        up.sends(BODY)  # then kill -9: no end, no commit
        self.assertTrue(up.fill.path.exists())
        second = Harness(root)
        self.assertIsNone(second.cache.lookup(sha256(BODY)))
        self.assertEqual(second.tmp_files(), [])
        self.assertEqual(len(second.cache), 0)


class ModuleTests(SynchronousTestCase):
    def test_chunk_sizes(self) -> None:
        self.assertTrue(256 * 1024 <= blobs_module.READ_CHUNK <= 1024 * 1024)
        self.assertGreater(blobs_module.TURN_BUDGET, blobs_module.READ_CHUNK)


class TouchTests(SynchronousTestCase):
    def test_a_burst_of_hits_on_one_blob_touches_its_file_once(self) -> None:
        h = Harness(temp_root(self))
        a, b = h.put(b"a" * 10), h.put(b"b" * 10)
        touched: list[str] = []
        original = h.store.touch
        h.store.touch = lambda digest, when: (touched.append(digest),  # type: ignore[method-assign]
                                              original(digest, when))
        for _ in range(5):
            h.cache.lookup(a)
        h.cache.lookup(b)
        h.cache.lookup(a)
        self.assertEqual(touched, [a, b, a])
