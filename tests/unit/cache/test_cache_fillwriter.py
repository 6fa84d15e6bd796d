"""A fill's writes and hashing run on the disk pool (L{dockerproxy.cache.fillwriter}):
one job at a time, taking the chunks in order and in batches, each reported to the
reactor thread; followers get only what is in the file; the upstream is paused while
too much is queued and resumed as soon as it is back under the bound; a write error
abandons the fill, and its partial is deleted only after the job on the pool.

The pool is a L{ManualPool}: nothing is written or hashed until the test runs a lane's
job (what it hands back to the reactor thread arrives at once).
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.cache import fillwriter
from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.diskio import DiskWork, ThreadedPool
from dockerproxy.cache.fills import Fill
from dockerproxy.cache.store import FilesystemStore
from tests.unit.cache.blobharness import IDLE, Client, Upstream, sha256
from tests.unit.fakes import ManualPool, lines_logged, scratch_dir

CHUNK = 64 * 1024
DATA = os.urandom(6 * CHUNK)


class Progress:
    """A follower that only records what the fill has written each time it is told."""

    def __init__(self, fill: Fill) -> None:
        self.fill = fill
        self.seen: list[int] = []
        fill._follow(self)  # type: ignore[arg-type]

    def fill_progressed(self) -> None:
        self.seen.append(self.fill.written)

    def fill_ended(self, ok: bool) -> None:
        pass


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

    def jobs(self) -> list[str]:
        """The pending calls on the pool, a lane's job named for its work."""
        names = []
        for f, _ in self.pool.calls:
            lane = getattr(f, "__self__", None)
            names.append(lane.work.__name__ if f.__name__ == "drain" else f.__name__)  # type: ignore[union-attr]
        return names  # a fill's: write_and_hash

    def partial_bytes(self, up: Upstream) -> bytes:
        return up.fill.path.read_bytes()


class OrderTests(FillWriterTestCase):
    def test_nothing_is_written_or_hashed_in_the_reactor_thread(self) -> None:
        up = self.upstream()
        up.sends(DATA[:CHUNK])
        self.assertEqual(self.jobs(), ["write_and_hash"])
        self.assertEqual(self.partial_bytes(up), b"", "not written inline")
        self.assertEqual((up.fill.received, up.fill.written), (CHUNK, 0))

    def test_one_job_takes_the_chunks_in_order_and_reports_each_batch(self) -> None:
        self.patch(fillwriter, "BATCH_MAX", 2 * CHUNK)
        up = self.upstream()
        progress = Progress(up.fill)
        for i in range(5):
            up.sends(DATA[i * CHUNK : (i + 1) * CHUNK])
        self.assertEqual(self.jobs(), ["write_and_hash"], "one job at a time")
        self.pool.complete(0)
        self.assertEqual(progress.seen, [2 * CHUNK, 4 * CHUNK, 5 * CHUNK], "batch by batch")
        self.assertEqual(self.partial_bytes(up), DATA[: 5 * CHUNK])
        self.assertEqual(self.jobs(), [])
        up.sends(DATA[5 * CHUNK :])  # the job ran dry and ended: a new one
        self.assertEqual(self.jobs(), ["write_and_hash"])
        self.pool.complete(0)
        self.assertEqual(self.partial_bytes(up), DATA)
        self.assertEqual(up.fill._hash.hexdigest(), sha256(DATA).hex, "hashed in order too")

    def test_a_job_gives_its_thread_back_after_job_max_and_the_lane_goes_on(self) -> None:
        self.patch(fillwriter, "BATCH_MAX", CHUNK)
        self.patch(fillwriter, "JOB_MAX", 2 * CHUNK)
        up = self.upstream()
        for i in range(5):
            up.sends(DATA[i * CHUNK : (i + 1) * CHUNK])
        self.cache.disk.background("touch", lambda: None)  # other disk work, waiting
        self.pool.complete(0)  # two chunks, then the thread is given back
        self.assertEqual(self.partial_bytes(up), DATA[: 2 * CHUNK])
        self.assertEqual(self.jobs(), ["<lambda>", "write_and_hash"], "queued behind")
        self.pool.complete(1)
        self.assertEqual(self.partial_bytes(up), DATA[: 4 * CHUNK])
        self.pool.complete_all()
        self.assertEqual(self.partial_bytes(up), DATA[: 5 * CHUNK])
        self.assertEqual(self.jobs(), [])
        self.assertEqual(up.fill._writer.behind, 0)

    def test_verified_once_written_and_hashed(self) -> None:
        up = self.upstream()
        up.sends(DATA)
        up.ends()
        self.assertEqual(self.cache.fill_for(sha256(DATA)), up.fill)
        self.assertEqual(self.jobs(), ["write_and_hash"], "not verified before")
        self.pool.complete(0)  # written and hashed: verified, the commit is queued
        self.assertEqual(self.jobs(), ["commit"])
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


class LogTests(FillWriterTestCase):
    def test_a_failed_fill_is_logged_with_the_bytes_received(self) -> None:
        """Not those written yet: the log tells what the upstream sent."""
        logged = lines_logged(self)
        up = self.upstream()
        up.sends(DATA[:CHUNK])
        up.ends(Failure(ConnectionLost("the upstream hung up")))
        self.assertEqual((up.outcome, up.fill.written), ([False], 0))
        self.assertTrue(any(f"failed after {CHUNK} bytes" in line for line in logged), logged)


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
        self.pool.complete(0)  # every byte is in the file and verified
        self.assertEqual(self.pool.names(), ["commit"])
        self.assertEqual(client.body(), DATA[:-1])
        self.pool.complete()
        self.assertEqual((client.body(), client.outcome), (DATA, [True]))


class BackpressureTests(FillWriterTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.patch(fillwriter, "QUEUE_LIMIT", 2 * CHUNK)
        self.patch(fillwriter, "BATCH_MAX", CHUNK)

    def test_the_upstream_is_paused_while_too_much_is_queued(self) -> None:
        self.patch(fillwriter, "BATCH_MAX", CHUNK)
        up = self.upstream()
        up.sends(DATA[:CHUNK])
        up.sends(DATA[CHUNK : 2 * CHUNK])
        self.assertEqual(up.transport.producerState, "producing", "at the bound, not past it")
        up.sends(DATA[2 * CHUNK : 3 * CHUNK])
        self.assertEqual(up.transport.producerState, "paused")
        up.sends(DATA[3 * CHUNK : 4 * CHUNK])  # arrived before the pause took effect
        behind_at_resume: list[int] = []
        resume = up.transport.resumeProducing

        def resumed() -> None:
            behind_at_resume.append(up.fill._writer.behind)
            resume()

        up.transport.resumeProducing = resumed  # type: ignore[method-assign]
        self.pool.complete(0)
        self.assertEqual(
            behind_at_resume, [2 * CHUNK], "resumed at the bound, with work still queued"
        )
        self.assertEqual(up.transport.producerState, "producing")
        up.sends(DATA[4 * CHUNK :])
        self.pool.complete_all()
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
        self.patch(fillwriter, "BATCH_MAX", CHUNK)
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
        self.assertEqual(self.jobs(), ["discard"])
        self.pool.complete_all()
        self.assertEqual(list((self.root / "tmp").iterdir()), [])

    def test_a_failed_fill_deletes_its_partial_only_after_the_write_job(self) -> None:
        up = self.upstream()
        up.sends(DATA[:CHUNK])
        up.fill.stop("the cache is stopping")
        self.assertEqual(up.outcome, [False])
        self.assertEqual(self.jobs(), ["write_and_hash"], "the discard waits for it")
        self.pool.complete(0)  # the job ends (what it had queued was dropped)
        self.assertEqual(self.jobs(), ["discard"])
        self.pool.complete_all()
        self.assertEqual(list((self.root / "tmp").iterdir()), [])
        self.assertEqual(self.cache.disk.outstanding, 0)


class CallsFromThreads:
    """The reactor's callFromThread, as a queue the test runs from its own thread."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., object], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        self.calls.put((f, args))

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            f, args = self.calls.get(timeout=30)
            f(*args)

    def run_ready(self) -> None:
        while True:
            try:
                f, args = self.calls.get_nowait()
            except queue.Empty:
                return
            f(*args)


class ThreadedLaneTests(SynchronousTestCase):
    def test_every_chunk_lands_in_order_on_real_threads(self) -> None:
        """Chunks added while a lane's job is ending are never stranded."""
        threadpool = ThreadPool(minthreads=2, maxthreads=2, name="test-fill")
        threadpool.start()
        self.addCleanup(threadpool.stop)
        reactor = CallsFromThreads()
        disk = DiskWork(ThreadedPool(reactor, threadpool))  # type: ignore[arg-type]
        store = FilesystemStore(scratch_dir(self), fsync=False)
        store.create()
        partial = store.open_partial()
        self.addCleanup(partial.close)
        hasher = hashlib.sha256()
        pauses: list[str] = []
        writer = fillwriter.FillWriter(
            disk,
            partial,
            hasher,
            progressed=lambda: None,
            failed=lambda failure: pauses.append(f"failed: {failure}"),
            pause=lambda: pauses.append("pause"),
            resume=lambda: pauses.append("resume"),
        )
        data = os.urandom(2000 * 4096)
        for i in range(0, len(data), 4096):
            writer.add(data[i : i + 4096])
            reactor.run_ready()
        flushed: list[object] = []
        writer.flushed().addBoth(flushed.append)
        reactor.run_until(lambda: bool(flushed))
        self.assertEqual(flushed, [None])
        self.assertEqual(writer.written, len(data))
        self.assertEqual(partial.path.read_bytes(), data)
        self.assertEqual(hasher.hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertNotIn("failed", " ".join(pauses))
        idle: list[object] = []
        disk.idle().addBoth(idle.append)
        reactor.run_until(lambda: bool(idle))
