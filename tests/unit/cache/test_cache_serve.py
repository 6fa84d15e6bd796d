"""Committed blobs served (L{dockerproxy.cache.senders.Sender} on a committed file): whole,
by range, HEAD, read in chunks, and with backpressure from the client's socket.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.cache import senders as senders_module
from dockerproxy.cache.senders import READ_CHUNK, TURN_BUDGET
from dockerproxy.shaping import MIN_SLICE, ByteBudget, capacity_for
from tests.unit.cache.blobharness import BODY, CacheTestCase, sha256


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


class ModuleTests(SynchronousTestCase):
    def test_chunk_sizes(self) -> None:
        self.assertTrue(256 * 1024 <= senders_module.READ_CHUNK <= 1024 * 1024)
        self.assertGreater(senders_module.TURN_BUDGET, senders_module.READ_CHUNK)


class ShapedTests(CacheTestCase):
    """A client with a bandwidth limit: reads from the blob file sized by its budget, the
    sender paused while it is spent, the body at the limit."""

    def test_a_limited_client_gets_the_body_at_its_rate(self) -> None:
        rate = 512 * 1024
        data = bytes(range(256)) * 8192  # 2 MiB
        digest = self.h.put(data)
        budget = ByteBudget(self.h.clock, rate)
        client = self.h.client(budget=budget).served(self.cache, digest)
        self.assertLessEqual(len(client.body()), capacity_for(rate) + MIN_SLICE)
        self.assertTrue(budget.in_debt)
        start = self.h.clock.seconds()
        while not client.outcome and self.h.clock.seconds() - start < 10:
            self.h.clock.advance(0.01)
        self.assertEqual(client.body(), data)
        self.assertEqual(client.outcome, [True])
        expected = (len(data) - capacity_for(rate)) / rate
        self.assertLess(abs(self.h.clock.seconds() - start - expected), 0.1 * expected)
        self.assertFalse(budget.busy)
        self.assertEqual(self.cache.stats()["pinned"], 0)
