"""What a fill ends as: committed once its size and digest check out, or failed
(a digest mismatch, a truncated or overlong body, an idle upstream, a write error, a stop),
leaving nothing in the cache and its clients aborted (L{dockerproxy.cache.fills.Fill}).
Fills the cache cannot keep are in test_cache_fills.py.
"""

from __future__ import annotations

import hashlib

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from dockerproxy.cache.blobs import Fill, FillInProgress
from dockerproxy.digests import of, parse
from tests.unit.cache.blobharness import (
    BODY,
    IDLE,
    CacheTestCase,
    Client,
    Upstream,
    dechunk,
    sha256,
)
from tests.unit.fakes import FakeResponse, lost


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
