"""Fills the cache cannot keep: bounded by the cache's size, the disk's free space and the
largest blob allowed, and what their clients get when a fill is given up.

The same harness as test_cache_blobs (a real directory, fake upstream responses, real
twisted.web requests over StringTransports); the disk's free space is a L{FakeDisk}.
"""

from __future__ import annotations

from pathlib import Path

from test_cache_blobs import BODY, CacheTestCase, Harness, dechunk, sha256, temp_root
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH

from dockerproxy.cache.blobs import TooLarge


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
        self.h = Harness(temp_root(self))
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
