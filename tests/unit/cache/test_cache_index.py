"""The blob cache's index of committed blobs (L{dockerproxy.cache.blobs.BlobCache}): least
recently used first out under the bound, never a blob being served, the order kept across
restarts (the index rebuilt from the directory, a crashed fill never seen), and the
touches that keep it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH

from dockerproxy.cache.blobs import TooLarge
from dockerproxy.cache.senders import READ_CHUNK
from dockerproxy.digests import Digest
from tests.unit.cache.blobharness import (
    BODY,
    CacheTestCase,
    Client,
    Harness,
    sha256,
)
from tests.unit.fakes import scratch_dir


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
        root = scratch_dir(self)
        first = Harness(root)
        a, b, c = (first.put(bytes([n]) * 100) for n in (1, 2, 3))
        first.cache.lookup(a)
        second = Harness(root, clock=first.clock)
        self.assertEqual(second.cache.lru_order(), [b, c, a])
        self.assertEqual(second.cache.used_bytes, 300)
        client = second.client().served(second.cache, a)
        self.assertEqual(client.body(), bytes([1]) * 100)

    def test_a_restart_with_a_smaller_bound_evicts_the_oldest(self) -> None:
        root = scratch_dir(self)
        first = Harness(root)
        a, b, c = (first.put(bytes([n]) * 100) for n in (1, 2, 3))
        first.cache.lookup(a)
        second = Harness(root, max_size=200, clock=first.clock)
        self.assertEqual(second.cache.lru_order(), [c, a])
        self.assertFalse(second.store.blob_path(b).exists())

    def test_a_crashed_fill_never_appears(self) -> None:
        root = scratch_dir(self)
        first = Harness(root)
        up = first.upstream(BODY)
        up.sends(BODY)  # then kill -9: no end, no commit
        self.assertTrue(up.fill.path.exists())
        second = Harness(root)
        self.assertIsNone(second.cache.lookup(sha256(BODY)))
        self.assertEqual(second.tmp_files(), [])
        self.assertEqual(len(second.cache), 0)


class TouchTests(SynchronousTestCase):
    def test_a_burst_of_hits_on_one_blob_touches_its_file_once(self) -> None:
        h = Harness(scratch_dir(self))
        a, b = h.put(b"a" * 10), h.put(b"b" * 10)
        touched: list[str] = []
        original = h.store.touch
        h.store.touch = lambda digest, when: (
            touched.append(digest),  # type: ignore[method-assign]
            original(digest, when),
        )
        for _ in range(5):
            h.cache.lookup(a)
        h.cache.lookup(b)
        h.cache.lookup(a)
        self.assertEqual(touched, [a, b, a])
