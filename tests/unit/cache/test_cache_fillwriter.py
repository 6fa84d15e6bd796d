"""A fill's writes and hashing run on the disk pool (L{dockerproxy.cache.fillwriter}):
in order, one batch at a time per lane, the two lanes side by side; followers get only
what is in the file; the upstream is paused while too much is queued and resumed once
the pool catches up; a write error abandons the fill, and its partial is deleted only
after the write on the pool.

The pool is a L{ManualPool}: nothing is written or hashed until the test runs it.
"""

from __future__ import annotations

import errno
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.cache import fillwriter
from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.store import FilesystemStore
from tests.unit.cache.blobharness import IDLE, Client, Upstream, sha256
from tests.unit.fakes import ManualPool, scratch_dir

CHUNK = 64 * 1024
DATA = os.urandom(6 * CHUNK)


class FillWriterTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.root = scratch_dir(self)
        self.store = FilesystemStore(self.root, fsync=False)
        self.pool = ManualPool()
        self.cache = BlobCache(
            self.store, self.clock, None, disk=DiskWork(self.pool), idle_timeout=IDLE
        )
        self.cache.start()

    def upstream(self, data: bytes = DATA, digest: object = None) -> Upstream:
        return Upstream(self.cache, digest or sha256(data), len(data))  # type: ignore[arg-type]

    def client(self, data: bytes = DATA) -> Client:
        return Client(self.clock).served(self.cache, sha256(data))

    def batches(self) -> list[tuple[str, int]]:
        """The pending calls on the pool: (name, bytes) for a fill's byte work."""
        return [
            (f.__name__, sum(len(c) for c in args[0]) if args and isinstance(args[0], list) else 0)
            for f, args in self.pool.calls
        ]

    def partial_bytes(self, up: Upstream) -> bytes:
        return up.fill.path.read_bytes()


class OrderTests(FillWriterTestCase):
    def test_nothing_is_written_or_hashed_in_the_reactor_thread(self) -> None:
        up = self.upstream()
        up.sends(DATA[:CHUNK])
        self.assertEqual(self.batches(), [("write_chunks", CHUNK), ("hash_chunks", CHUNK)])
        self.assertEqual(self.partial_bytes(up), b"", "not written inline")
        self.assertEqual((up.fill.received, up.fill.written), (CHUNK, 0))

    def test_one_batch_per_lane_at_a_time_of_what_queued_meanwhile_in_order(self) -> None:
        up = self.upstream()
        for i in range(3):
            up.sends(DATA[i * CHUNK : (i + 1) * CHUNK])
        self.assertEqual(
            self.batches(),
            [("write_chunks", CHUNK), ("hash_chunks", CHUNK)],
            "the next batch waits for the one on the pool",
        )
        self.pool.complete(0)  # the first write: the two queued behind go as one batch
        self.assertEqual(self.partial_bytes(up), DATA[:CHUNK])
        self.assertEqual(up.fill.written, CHUNK)
        self.assertEqual(self.batches(), [("hash_chunks", CHUNK), ("write_chunks", 2 * CHUNK)])
        self.pool.complete(1)
        self.assertEqual(self.partial_bytes(up), DATA[: 3 * CHUNK])
        self.assertEqual(self.batches(), [("hash_chunks", CHUNK)], "the lanes are independent")
        self.pool.complete_all()
        self.assertEqual(self.batches(), [])

    def test_verified_once_both_lanes_are_through(self) -> None:
        up = self.upstream()
        up.sends(DATA)
        up.ends()
        self.assertEqual(self.cache.fill_for(sha256(DATA)), up.fill)
        self.pool.complete(0)  # written, not hashed
        self.assertEqual([n for n, _ in self.batches()], ["hash_chunks"])
        self.pool.complete(0)  # hashed: verified, the commit is queued
        self.assertEqual([n for n, _ in self.batches()], ["commit"])
        self.pool.complete()
        self.assertEqual(up.outcome, [True])
        self.assertEqual(self.store.blob_path(sha256(DATA)).read_bytes(), DATA)

    def test_a_corrupt_body_fails_once_hashed(self) -> None:
        up = self.upstream(digest=sha256(b"something else"))
        up.sends(DATA)
        up.ends()
        self.assertEqual(up.outcome, [])
        self.pool.complete_all()
        self.assertEqual(up.outcome, [False])
        self.assertIn("digest mismatch", up.fill.failure or "")
        self.assertEqual(list((self.root / "tmp").iterdir()), [])


class FollowerTests(FillWriterTestCase):
    def test_a_follower_gets_only_what_is_in_the_file(self) -> None:
        up = self.upstream()
        client = self.client()
        up.sends(DATA[: 2 * CHUNK])
        self.assertEqual(client.body(), b"", "received is not written")
        self.pool.complete(0)
        self.assertEqual(client.body(), DATA[: 2 * CHUNK])
        up.sends(DATA[2 * CHUNK :])
        up.ends()
        self.pool.complete_all()  # written, hashed, committed
        self.assertEqual((client.body(), client.outcome), (DATA, [True]))

    def test_the_last_byte_waits_for_the_commit(self) -> None:
        up = self.upstream()
        client = self.client()
        up.sends(DATA)
        up.ends()
        self.pool.complete(0)  # every byte is in the file
        self.assertEqual(client.body(), DATA[:-1])
        self.pool.complete(0)  # hashed
        self.assertEqual(self.pool.names(), ["commit"])
        self.assertEqual(client.body(), DATA[:-1])
        self.pool.complete()
        self.assertEqual((client.body(), client.outcome), (DATA, [True]))


class BackpressureTests(FillWriterTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.patch(fillwriter, "QUEUE_LIMIT", 2 * CHUNK)

    def test_the_upstream_is_paused_while_too_much_is_queued(self) -> None:
        up = self.upstream()
        up.sends(DATA[:CHUNK])
        up.sends(DATA[CHUNK : 2 * CHUNK])
        self.assertEqual(up.transport.producerState, "producing", "at the bound, not past it")
        up.sends(DATA[2 * CHUNK : 3 * CHUNK])
        self.assertEqual(up.transport.producerState, "paused")
        self.assertEqual(self.pool.names(), ["write_chunks", "hash_chunks"])
        self.pool.complete(0)  # 64 KiB written (128 KiB to go); hashing has 192 KiB to go
        self.assertEqual(up.transport.producerState, "paused", "the slower lane counts")
        self.pool.complete(0)  # 64 KiB hashed: 128 KiB behind in each, over half the bound
        self.assertEqual(up.transport.producerState, "paused")
        self.assertEqual(self.batches(), [("write_chunks", 2 * CHUNK), ("hash_chunks", 2 * CHUNK)])
        self.pool.complete(0)  # written: hashing still 128 KiB behind
        self.assertEqual(up.transport.producerState, "paused")
        self.pool.complete(0)  # all through
        self.assertEqual(up.transport.producerState, "producing")
        up.sends(DATA[3 * CHUNK :])
        self.assertEqual(up.transport.producerState, "paused")
        self.pool.complete_all()
        self.assertEqual(up.transport.producerState, "producing")
        self.assertEqual(self.partial_bytes(up), DATA)

    def test_a_slow_client_never_pauses_the_upstream(self) -> None:
        up = self.upstream()
        client = Client(self.clock, buffer_size=CHUNK).served(self.cache, sha256(DATA))
        up.sends(DATA[:CHUNK])
        self.pool.complete_all()
        self.assertFalse(client.transport.paused_producer)
        up.sends(DATA[CHUNK : 2 * CHUNK])
        self.pool.complete_all()
        self.assertTrue(client.transport.paused_producer, "the client side pushes back")
        self.assertEqual(up.transport.producerState, "producing")

    def test_progress_on_the_pool_keeps_a_paused_fill_alive(self) -> None:
        up = self.upstream()
        up.sends(DATA[: 3 * CHUNK])
        self.assertEqual(up.transport.producerState, "paused")
        self.clock.advance(IDLE - 1)
        self.pool.complete(0)  # the disk moved: the fill is not idle
        self.clock.advance(IDLE - 1)
        self.assertEqual(up.outcome, [])
        self.clock.advance(2)
        self.assertEqual(up.outcome, [False], "no progress at all for the idle timeout")
        self.assertEqual(up.transport.producerState, "stopped")


class WriteErrorTests(FillWriterTestCase):
    def test_a_write_error_abandons_the_fill_and_deletes_after_the_write(self) -> None:
        up = self.upstream()
        writes: list[int] = []

        def full(data: bytes) -> None:
            writes.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device")

        up.fill._partial.write = full  # type: ignore[method-assign]
        client = self.client()
        up.sends(DATA[:CHUNK])
        up.sends(DATA[CHUNK : 2 * CHUNK])
        self.pool.complete(0)  # the first write fails on the pool
        self.assertEqual(up.outcome, [False])
        self.assertTrue(up.fill.abandoned)
        self.assertIn("No space left", up.fill.failure or "")
        self.assertEqual(up.transport.producerState, "stopped")
        self.assertEqual(client.outcome, [False], "no fallback: aborted")
        self.assertEqual(writes, [CHUNK], "what was queued behind is dropped")
        self.assertEqual([n for n, _ in self.batches()], ["hash_chunks", "discard"])
        self.pool.complete_all()
        self.assertEqual(list((self.root / "tmp").iterdir()), [])

    def test_a_failed_fill_deletes_its_partial_only_after_the_write_on_the_pool(self) -> None:
        up = self.upstream()
        up.sends(DATA[:CHUNK])
        up.fill.stop("the cache is stopping")
        self.assertEqual(up.outcome, [False])
        names = [n for n, _ in self.batches()]
        self.assertEqual(names, ["write_chunks", "hash_chunks"], "the discard waits")
        self.pool.complete(0)  # the write lands in the file still open
        self.assertEqual([n for n, _ in self.batches()], ["hash_chunks", "discard"])
        self.pool.complete_all()
        self.assertEqual(list((self.root / "tmp").iterdir()), [])
        self.assertEqual(self.cache.disk.outstanding, 0)
