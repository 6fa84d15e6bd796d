"""Fills the cache cannot keep: bounded by the cache's size, the disk's free space and the
largest blob allowed, and what their clients get when a fill is given up.

The harness of blobharness.py (a real directory, fake upstream responses, real
twisted.web requests over StringTransports); the disk's free space is a L{FakeDisk}.
"""

from __future__ import annotations

import errno
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH

from dockerproxy.cache.blobs import TooLarge
from tests.unit.cache.blobharness import (
    BODY,
    CacheTestCase,
    Client,
    Harness,
    RecordingFallback,
    Upstream,
    dechunk,
    sha256,
)
from tests.unit.fakes import scratch_dir


class FakeDisk:
    """A filesystem of C{capacity} bytes holding only the cache: free space is what its
    files (committed blobs and partials) leave."""

    def __init__(self, h: Harness, capacity: int) -> None:
        self.root = h.root
        self.capacity = capacity
        h.store.free_bytes = self.free  # type: ignore[method-assign]

    def free(self) -> int:
        used = sum(p.stat().st_size for p in Path(self.root).rglob("*") if p.is_file())
        return self.capacity - used


class SizeBoundTests(CacheTestCase):
    max_size = 3000

    def test_a_body_of_unknown_length_is_cut_off_at_the_bound(self) -> None:
        up = self.h.upstream(BODY * 4, length=UNKNOWN_LENGTH)
        client = self.h.client().served(self.cache, sha256(BODY * 4))
        up.sends(BODY * 2)
        self.assertEqual(up.transport.producerState, "producing")
        up.sends(BODY)  # 3072 bytes: past the bound
        self.assertEqual(up.transport.producerState, "stopped")
        self.assertEqual(up.outcome, [False])
        self.assertIn("more than the cache can keep (3000 bytes)", up.fill.failure or "")
        self.assertEqual(up.fill.written, 2048, "nothing past the bound was written")
        self.assertEqual(self.h.tmp_files(), [])
        self.assertIsNone(self.cache.fill_for(sha256(BODY * 4)))
        self.assertTrue(client.transport.aborted)
        self.assertEqual(dechunk(client.body()), ((BODY * 2)[:-1], False))

    def test_a_fill_no_one_follows_stops_at_the_bound_too(self) -> None:
        up = self.h.upstream(BODY * 4, length=UNKNOWN_LENGTH)
        for _ in range(3):
            up.sends(BODY)
        self.assertEqual(up.transport.producerState, "stopped")
        self.assertEqual((up.outcome, up.fill.written), ([False], 2048))
        up.sends(BODY)  # what was on its way when the connection was stopped
        self.assertEqual(up.fill.written, 2048)
        self.assertEqual(self.h.tmp_files(), [])

    def test_a_known_length_up_to_the_bound_fills(self) -> None:
        data = b"x" * self.max_size
        up = self.h.upstream(data)
        up.sends(data)
        up.ends()
        self.assertEqual(up.outcome, [True])


class MaxBlobSizeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness(scratch_dir(self))
        self.cache = self.h.cache
        self.cache.max_blob_size = 1500

    def test_a_known_length_beyond_it_is_refused(self) -> None:
        self.assertFalse(self.cache.fits(1501))
        with self.assertRaises(TooLarge):
            self.h.upstream(b"y" * 1501)
        self.assertEqual(self.h.tmp_files(), [])

    def test_an_unknown_length_is_cut_off_past_it(self) -> None:
        up = self.h.upstream(BODY * 2, length=UNKNOWN_LENGTH)
        up.sends(BODY)
        up.sends(BODY)
        self.assertEqual(up.transport.producerState, "stopped")
        self.assertIn("more than the largest blob allowed (1500 bytes)", up.fill.failure or "")


class FreeSpaceTests(CacheTestCase):
    """No max_size: the disk is the bound."""

    def setUp(self) -> None:
        super().setUp()
        self.disk = FakeDisk(self.h, capacity=5000)

    def test_room_is_free_space_plus_what_eviction_can_free(self) -> None:
        a = self.h.put(b"a" * 1000)
        self.assertEqual(self.cache.room(), 5000)
        client = self.h.client()
        client.channel.pauseProducing()
        client.served(self.cache, a)  # pinned while it is being served
        self.assertEqual(self.cache.room(), 4000)

    def test_a_known_length_beyond_the_disk_is_never_written(self) -> None:
        self.h.put(b"a" * 1000)
        with self.assertRaises(TooLarge):
            self.h.upstream(b"z" * 5001)
        self.assertEqual(self.h.tmp_files(), [])

    def test_a_fill_evicts_what_the_disk_needs_for_it(self) -> None:
        a = self.h.put(b"a" * 1000)
        b = self.h.put(b"b" * 1000)
        data = b"c" * 3500  # 3000 free: one blob must go
        up = self.h.upstream(data)
        self.assertEqual(self.cache.lru_order(), [b])
        self.assertNotIn(a, self.cache)
        up.sends(data)
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertEqual(self.cache.lru_order(), [b, sha256(data)])

    def test_fills_under_way_keep_the_space_they_still_need(self) -> None:
        first = b"d" * 3000
        self.h.upstream(first).sends(first[:1000])
        self.assertEqual(self.cache.room(), 2000)
        with self.assertRaises(TooLarge):
            self.h.upstream(b"e" * 2001)

    def test_a_body_of_unknown_length_is_cut_off_at_the_free_space(self) -> None:
        up = self.h.upstream(BODY * 5, length=UNKNOWN_LENGTH)
        self.assertEqual(up.fill.room, 5000)
        for _ in range(5):
            up.sends(BODY)
        self.assertEqual(up.transport.producerState, "stopped")
        self.assertEqual(up.fill.written, 4 * len(BODY))
        self.assertEqual(self.h.tmp_files(), [])


# --------------------------------------------------------------------------- abandoned fills


def disk_full_after(up: Upstream, allowed: int) -> None:
    """The fill's partial takes C{allowed} bytes, then the disk is full."""
    partial = up.fill._partial
    write = partial.write

    def limited(data: bytes) -> None:
        if partial.size + len(data) > allowed:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(data)

    partial.write = limited  # type: ignore[method-assign]


class AbandonedFillTests(CacheTestCase):
    """A fill given up for the cache's own reasons hands each client to its fallback."""

    def follower(self, fallback: RecordingFallback | None, data: bytes = BODY) -> Client:
        client = self.h.client()
        self.cache.serve(client.request, sha256(data), None, fallback).addBoth(
            client.outcome.append
        )
        return client

    def test_a_full_disk_hands_each_follower_over_from_where_it_is(self) -> None:
        up = self.h.upstream(BODY)
        disk_full_after(up, 600)
        fast, slow = RecordingFallback(), RecordingFallback()
        first = self.follower(fast)
        second = self.h.client()
        second.channel.pauseProducing()  # its socket is full: it is still at byte 0
        self.cache.serve(second.request, sha256(BODY), None, slow).addBoth(second.outcome.append)
        up.sends(BODY[:500])
        up.sends(BODY[500:])
        self.assertEqual(up.transport.producerState, "stopped")
        self.assertTrue(up.fill.abandoned)
        self.assertIn("No space left on device", up.fill.failure or "")
        self.assertEqual(up.outcome, [False])
        self.assertEqual(self.h.tmp_files(), [])
        self.assertEqual((fast.calls, slow.calls), ([("rest", 500, 1023)], [("rest", 0, 1023)]))
        for client in (first, second):
            self.assertIsNone(client.request.producer, "the request is the fallback's now")
            self.assertFalse(client.transport.aborted)
            self.assertFalse(client.request.finished)
        self.assertEqual(first.body(), BODY[:500])
        self.assertEqual(first.header(b"content-length"), b"1024")
        self.assertEqual(self.cache.stats()["pinned"], 0)
        self.assertEqual((first.outcome, second.outcome), ([], []))
        fast.answers[0].callback(True)
        slow.answers[0].callback(False)
        self.assertEqual((first.outcome, second.outcome), ([True], [False]))

    def test_a_range_goes_on_to_its_own_last_byte(self) -> None:
        up = self.h.upstream(BODY)
        disk_full_after(up, 600)
        fallback = RecordingFallback()
        client = self.h.client()
        self.cache.serve(client.request, sha256(BODY), (100, 799), fallback)
        up.sends(BODY[:500])
        up.sends(BODY[500:])
        self.assertEqual(fallback.calls, [("rest", 500, 799)])
        self.assertEqual(client.body(), BODY[100:500])

    def test_a_body_of_unknown_length_goes_on_to_the_end(self) -> None:
        self.cache.max_size = 2000
        up = self.h.upstream(BODY * 3, length=UNKNOWN_LENGTH)
        fallback = RecordingFallback()
        get = self.follower(fallback, BODY * 3)
        ranged, head = RecordingFallback(), RecordingFallback()
        waiting = self.h.client()
        self.cache.serve(waiting.request, sha256(BODY * 3), (10, 20), ranged)
        asking = self.h.client(method=b"HEAD")
        self.cache.serve(asking.request, sha256(BODY * 3), None, head)
        up.sends(BODY)
        up.sends(BODY)  # 2048: past the bound
        self.assertTrue(up.fill.abandoned)
        self.assertEqual(fallback.calls, [("rest", 1023, None)])
        self.assertEqual(dechunk(get.body()), (BODY[:1023], False))
        # Nothing was decided for these yet (they waited for the length): answered afresh.
        self.assertEqual((ranged.calls, head.calls), ([("whole",)], [("whole",)]))
        self.assertEqual((waiting.transport.value(), asking.transport.value()), (b"", b""))

    def test_without_a_fallback_the_response_is_aborted(self) -> None:
        up = self.h.upstream(BODY)
        disk_full_after(up, 600)
        client = self.h.client().served(self.cache, sha256(BODY))
        up.sends(BODY[:500])
        up.sends(BODY[500:])
        self.assertTrue(client.transport.aborted)
        self.assertEqual(client.outcome, [False])

    def test_the_upstreams_faults_still_abort(self) -> None:
        up = self.h.upstream(BODY)
        fallback = RecordingFallback()
        client = self.follower(fallback)
        up.sends(BODY[:-1] + b"X")
        up.ends()
        self.assertEqual(fallback.calls, [])
        self.assertTrue(client.transport.aborted)
        self.assertFalse(up.fill.abandoned)

    def test_past_the_largest_blob_allowed_it_aborts(self) -> None:
        self.cache.max_blob_size = 1500
        up = self.h.upstream(BODY * 2, length=UNKNOWN_LENGTH)
        fallback = RecordingFallback()
        client = self.follower(fallback, BODY * 2)
        up.sends(BODY)
        up.sends(BODY)
        self.assertEqual(fallback.calls, [])
        self.assertTrue(client.transport.aborted)

    def test_a_fallback_for_a_client_already_gone_is_not_asked(self) -> None:
        up = self.h.upstream(BODY)
        disk_full_after(up, 600)
        fallback = RecordingFallback()
        client = self.follower(fallback)
        up.sends(BODY[:500])
        client.goes_away()
        up.sends(BODY[500:])
        self.assertEqual(fallback.calls, [])
        self.assertEqual(client.outcome, [False])


class CommitFailureTests(CacheTestCase):
    def test_a_verified_blob_the_disk_would_not_take_is_served_not_kept(self) -> None:
        def full(partial: object, digest: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.h.store.commit = full  # type: ignore[assignment]
        up = self.h.upstream(BODY)
        fallback = RecordingFallback()
        client = self.h.client()
        self.cache.serve(client.request, sha256(BODY), None, fallback).addBoth(
            client.outcome.append
        )
        up.sends(BODY)
        up.ends()
        self.assertEqual(up.outcome, [True])
        self.assertFalse(up.fill.committed)
        self.assertEqual(fallback.calls, [], "the open file has the whole verified body")
        self.assertEqual((client.body(), client.outcome), (BODY, [True]))
        self.assertNotIn(sha256(BODY), self.cache)
        self.assertEqual(self.h.tmp_files(), [])
        self.assertEqual(self.cache.stats()["pinned"], 0)
