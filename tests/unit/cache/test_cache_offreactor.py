"""The blob cache's blocking disk work runs on its disk pool, never inline: a fill's
writes and hashing (test_cache_fillwriter has the details), commits, touches, unlinks
of evicted blobs and of failed fills' partial files; and what the cache does while that
work is still queued.

The pool is a L{ManualPool}: nothing reaches the disk until the test runs it. The
cache is on a real temporary directory; clients are twisted.web requests over a
StringTransport (a smaller harness than test_cache_blobs', kept apart from it).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.server import Site

from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.fills import Fill
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.digests import Digest, of
from tests.unit.fakes import Capture, FakeResponse, ManualPool, lines_logged, scratch_dir

BODY = bytes(range(256)) * 4  # 1 KiB
BYTE_WORK = {"drain"}  # a fill's per-byte work (its writes and hashing), on the pool too


def blob(n: int) -> bytes:
    """A distinct 1 KiB body."""
    return bytes([n]) + BODY[1:]


class Upstream:
    """One fill and the upstream body feeding it."""

    def __init__(self, cache: BlobCache, data: bytes, digest: Digest | None = None) -> None:
        self.data = data
        self.response = FakeResponse(len(data), StringTransport())
        self.fill: Fill = cache.start_fill(digest or of(data), self.response)
        self.outcome: list[object] = []
        self.fill.done.addBoth(self.outcome.append)

    def sends_all(self) -> Upstream:
        assert self.response.protocol is not None
        self.response.protocol.dataReceived(self.data)
        return self

    def ends(self) -> None:
        assert self.response.protocol is not None
        self.response.protocol.connectionLost(Failure(ResponseDone()))


class Client:
    """One GET of a blob, served by the cache."""

    def __init__(self, clock: Clock, cache: BlobCache, digest: Digest) -> None:
        resource = Capture()
        protocol = Site(resource, reactor=clock).buildProtocol(None)
        self.transport = StringTransport()
        protocol.makeConnection(self.transport)
        protocol.dataReceived(b"GET /v2/a/blobs/x HTTP/1.1\r\nHost: mirror\r\n\r\n")
        self.outcome: list[object] = []
        cache.serve(resource.requests[0], digest).addBoth(self.outcome.append)

    def body(self) -> bytes:
        return self.transport.value().partition(b"\r\n\r\n")[2]


class OffReactorTestCase(SynchronousTestCase):
    max_size: int | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.root = scratch_dir(self)
        self.store = FilesystemStore(self.root, fsync=False)
        self.pool = ManualPool()
        self.cache = BlobCache(self.store, self.clock, self.max_size, disk=DiskWork(self.pool))
        self.removed: list[Digest] = []
        self.cache.on_removed = self.removed.append
        self.cache.start()

    def put(self, data: bytes) -> Digest:
        """A committed blob, its disk work done."""
        Upstream(self.cache, data).sends_all().ends()
        self.pool.complete_all()
        self.clock.advance(1)
        return of(data)

    def client(self, digest: Digest) -> Client:
        return Client(self.clock, self.cache, digest)

    def land(self) -> None:
        """Run the fills' writes and hashing queued on the pool, and nothing else."""
        while True:
            names = self.pool.names()
            byte_work = [i for i, name in enumerate(names) if name in BYTE_WORK]
            if not byte_work:
                return
            self.pool.complete(byte_work[0])

    def tmp_files(self) -> list[Path]:
        return list((self.root / "tmp").iterdir())


class CommitTests(OffReactorTestCase):
    def test_a_blob_is_served_as_committed_only_after_its_commit_on_the_pool(self) -> None:
        digest = of(BODY)
        up = Upstream(self.cache, BODY)
        follower = self.client(digest)
        up.sends_all()
        self.land()
        up.ends()
        self.assertEqual(self.pool.names(), ["commit"])
        self.assertFalse(self.store.blob_path(digest).exists(), "not committed inline")
        self.assertIsNone(self.cache.get(digest), "not in the index before the commit")
        self.assertIs(self.cache.fill_for(digest), up.fill)
        self.assertEqual(up.outcome, [], "done fires after the commit")
        self.assertEqual(follower.body(), BODY[:-1], "the last byte is held back")
        self.assertEqual(follower.outcome, [])
        late = self.client(digest)
        self.assertEqual((late.body(), late.outcome), (BODY[:-1], []), "so it is from a late one")
        self.pool.complete()
        self.assertEqual(self.store.blob_path(digest).read_bytes(), BODY)
        self.assertIsNotNone(self.cache.get(digest))
        self.assertIsNone(self.cache.fill_for(digest))
        self.assertEqual((up.outcome, up.fill.committed), ([True], True))
        self.assertEqual((follower.body(), follower.outcome), (BODY, [True]))
        self.assertEqual((late.body(), late.outcome), (BODY, [True]))

    def test_a_client_arriving_as_the_commit_renames_the_file_gets_the_blob(self) -> None:
        """The rename happened on a pool thread; the index hears of it a moment later."""
        digest = of(BODY)
        up = Upstream(self.cache, BODY).sends_all()
        self.land()
        up.ends()
        hand_back = self.pool.run_now()  # the partial is now the committed file
        self.assertEqual(self.tmp_files(), [])
        late = self.client(digest)
        self.assertEqual(late.body(), BODY[:-1])
        hand_back()
        self.assertEqual((late.body(), late.outcome), (BODY, [True]))

    def test_a_commit_that_fails_on_the_pool_is_served_whole_and_not_kept(self) -> None:
        digest = of(BODY)

        def full(*args: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.store.commit = full  # type: ignore[assignment]
        up = Upstream(self.cache, BODY)
        follower = self.client(digest)
        up.sends_all()
        self.land()
        up.ends()
        self.assertEqual(follower.body(), BODY[:-1])
        self.pool.complete()
        self.assertEqual((follower.body(), follower.outcome), (BODY, [True]))
        self.assertEqual((up.outcome, up.fill.committed), ([True], False))
        self.assertIsNone(self.cache.get(digest))
        self.assertEqual(self.pool.names(), ["discard"], "the partial goes on the pool")
        self.assertEqual(len(self.tmp_files()), 1)
        self.pool.complete()
        self.assertEqual(self.tmp_files(), [])

    def test_stopping_the_cache_keeps_a_fill_whose_commit_is_under_way(self) -> None:
        up = Upstream(self.cache, BODY).sends_all()
        self.land()
        up.ends()
        self.cache.stop()
        self.assertEqual(up.outcome, [])
        self.pool.complete_all()
        self.assertEqual(up.outcome, [True])
        self.assertIn(of(BODY), self.cache)

    def test_a_failed_fills_partial_is_removed_on_the_pool(self) -> None:
        up = Upstream(self.cache, BODY, digest=of(b"something else")).sends_all()
        self.land()
        up.ends()
        self.assertEqual(up.outcome, [False])
        self.assertEqual(self.pool.names(), ["discard"])
        self.assertEqual(len(self.tmp_files()), 1, "not unlinked inline")
        self.pool.complete()
        self.assertEqual(self.tmp_files(), [])


class TouchTests(OffReactorTestCase):
    def test_a_hit_touches_the_blob_on_the_pool(self) -> None:
        first = self.put(blob(1))
        self.put(blob(2))
        path = self.store.blob_path(first)
        before = path.stat().st_mtime
        self.clock.advance(100)
        self.assertIsNotNone(self.cache.lookup(first))
        self.assertEqual(self.pool.names(), ["touch"])
        self.assertEqual(path.stat().st_mtime, before, "not touched inline")
        self.pool.complete()
        self.assertEqual(path.stat().st_mtime, self.clock.seconds())

    def test_a_touch_that_fails_is_logged(self) -> None:
        logged = lines_logged(self)
        first = self.put(blob(1))
        self.put(blob(2))

        def broken(*args: object) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.store.touch = broken  # type: ignore[assignment]
        self.assertIsNotNone(self.cache.lookup(first))
        self.pool.complete()
        self.assertTrue(
            any(f"cannot touch {first}" in line and "Input/output" in line for line in logged),
            logged,
        )


class EvictionTests(OffReactorTestCase):
    max_size = 2 * len(BODY) + 100

    def test_an_evicted_blob_leaves_the_index_at_once_and_the_disk_on_the_pool(self) -> None:
        old = self.put(blob(1))
        self.put(blob(2))
        Upstream(self.cache, blob(3))  # its length counts from its start: the oldest goes
        self.assertNotIn(old, self.cache)
        self.assertEqual(self.removed, [old])
        self.assertIsNone(self.cache.lookup(old), "nothing new is served from it")
        self.assertEqual(self.pool.names(), ["remove"])
        self.assertTrue(self.store.blob_path(old).exists(), "not unlinked inline")
        self.pool.complete()
        self.assertFalse(self.store.blob_path(old).exists())

    def test_a_blob_filled_again_is_committed_after_its_unlink(self) -> None:
        """The unlink an eviction queued must not remove the same digest committed later."""
        old = self.put(blob(1))
        self.put(blob(2))
        Upstream(self.cache, blob(3))
        again = Upstream(self.cache, blob(1)).sends_all()  # evicts blob 2
        self.land()
        again.ends()
        self.assertEqual(
            self.pool.names(),
            ["remove", "remove"],
            "the commit waits for the unlink of the same digest",
        )
        self.pool.complete()
        self.assertEqual(self.pool.names(), ["remove", "commit"])
        self.pool.complete_all()
        self.assertEqual(self.store.blob_path(old).read_bytes(), blob(1))
        self.assertIn(old, self.cache)


class DiskRoomTests(OffReactorTestCase):
    def test_evictions_waiting_for_their_unlink_count_as_free_space(self) -> None:
        """Otherwise every fill starting before the unlinks land evicts more blobs."""
        capacity = 3000

        def free() -> int:
            used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
            return capacity - used

        self.store.free_bytes = free  # type: ignore[method-assign]
        first, second = self.put(blob(1)), self.put(blob(2))  # 952 bytes free
        Upstream(self.cache, os.urandom(1500))  # needs 548 more: the first is evicted
        self.assertEqual(self.removed, [first])
        self.assertEqual(self.pool.names(), ["remove"])
        Upstream(self.cache, os.urandom(400))  # fits in what that unlink frees
        self.assertEqual(self.removed, [first])
        self.assertIn(second, self.cache)
