"""A fill's per-byte work off the reactor: its writes and its hashing, on the disk pool.

At relay speed (a couple of GB/s on loopback) the sha256 of a body and the copy of
it into the page cache cost more CPU than receiving it: done in the reactor thread,
one thread would receive, hash, write and send in turn, and every other connection
would wait for it. Both release the GIL on large buffers, so here they run on the
cache's disk pool (L{DiskWork}): the reactor only receives, queues the chunk and
sends.

The chunks go through one I{lane}: one job on the pool at a time, keyed, taking
batches (up to L{BATCH_MAX}) from the queue until it is empty, writing then
hashing each chunk (still in the CPU's cache), so the file and the hash get them
in order. Each batch through is reported to the reactor thread:
L{FillWriter.written} counts the bytes in the file (what followers may read);
the fill verifies the digest once the lane is flushed. (Two lanes, the writes
and the hashing side by side, cost 15% more CPU per GB and were slower on two
shared cores: see README, Benchmark.)

The bytes queued and not yet through the lane are bounded: past L{QUEUE_LIMIT}
the fill pauses the upstream, and resumes it as soon as a batch brings them back
under it (the lane still has work queued meanwhile: resuming only once it ran
dry left it idle for every round trip to the upstream), so a disk or CPU slower
than the network costs memory of one bound per fill, not of the blob.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.store import Partial

# Bytes received and not yet written and hashed, past which the upstream is paused
# (and resumed as soon as they are back under it): a few batches' worth, so the
# lane finishing a batch still has the next ones queued while the upstream starts
# sending again, and little next to a process's footprint.
QUEUE_LIMIT = 4 * 1024 * 1024
# The most one batch takes from its lane's queue (at least one chunk): followers
# hear of written bytes batch by batch, and a lane is back in the reactor this often.
BATCH_MAX = 1024 * 1024
# The most one job of a lane takes before it gives its pool thread back (the lane
# goes on in a new job, queued behind whatever else waits for the pool): a fast
# fill never holds a thread for its whole length while a commit waits for one.
JOB_MAX = 32 * 1024 * 1024


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Lane:
    """Chunks through one blocking call on the disk pool, in order, in batches.

    One job on the pool (L{drain}) takes batches from the queue until it is empty
    (or it has taken L{JOB_MAX}: then the reactor queues another), telling the
    reactor thread of each (L{Pool.report}); the reactor starts a job only when
    none is running. A job per batch, each started from the reactor, left
    the pool idle for a round trip between threads (about a millisecond with the
    reactor busy) a thousand times per GiB.
    """

    def __init__(
        self,
        disk: DiskWork,
        work: Callable[[list[bytes]], object],
        done: Callable[[int], None],
        failed: Callable[[Failure], None],
    ) -> None:
        self.disk = disk
        self.work = work
        self.done = done
        self.failed = failed
        self.behind = 0  # bytes given to this lane and not reported through it yet
        self.closed = False
        # Shared with the pool's thread, under the lock:
        self._lock = threading.Lock()
        self._queued: deque[bytes] = deque()
        self._draining = False

    def add(self, data: bytes) -> None:
        self.behind += len(data)
        with self._lock:
            self._queued.append(data)
            start, self._draining = not self._draining, True
        if start:
            self._start()

    def _start(self) -> None:
        self.disk.run(self.drain, key=self).addCallbacks(self._job_ended, self._failed)

    def _job_ended(self, more: bool) -> None:
        """A job gave its thread back with chunks still queued: the next one goes on."""
        if more and not self.closed:
            self._start()

    def close(self) -> None:
        """Drop what is queued; the batch on the pool ends, its outcome ignored."""
        self.closed = True
        with self._lock:
            self._queued.clear()

    def drain(self) -> bool:
        """On the pool: batches of up to L{BATCH_MAX} until the queue is empty
        (C{False}) or L{JOB_MAX} bytes are through (C{True}: still draining)."""
        budget = JOB_MAX
        while True:
            with self._lock:
                if not self._queued:
                    self._draining = False
                    return False
                if budget <= 0:
                    return True
                batch = [self._queued.popleft()]
                size = len(batch[0])
                while self._queued and size + len(self._queued[0]) <= BATCH_MAX:
                    size += len(self._queued[0])
                    batch.append(self._queued.popleft())
            try:
                self.work(batch)
            except BaseException:
                with self._lock:
                    self._draining = False
                raise
            self.disk.pool.report(self._ran, size)
            budget -= size

    def _ran(self, count: int) -> None:
        """In the reactor thread: a batch is through."""
        if not self.closed:
            self.behind -= count
            self.done(count)

    def _failed(self, failure: Failure) -> None:
        if not self.closed:
            self.close()
            self.failed(failure)


class FillWriter:
    """The writes of one fill to its partial file and the hashing of its body, off the
    reactor; see the module docstring.

    The owner is told through callbacks, in the reactor thread: C{progressed()}
    when more bytes are in the file, C{failed(failure)} when a write or the hash
    failed (nothing more is done), C{pause()} and C{resume()} for the upstream.
    """

    def __init__(
        self,
        disk: DiskWork,
        partial: Partial,
        hasher: Hasher,
        *,
        progressed: Callable[[], None],
        failed: Callable[[Failure], None],
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self.disk = disk
        self.partial = partial
        self.written = 0
        self.limit = QUEUE_LIMIT
        self.paused = False
        self._progressed = progressed
        self._failed = failed
        self._pause = pause
        self._resume = resume
        self._flushed: list[Deferred[None]] = []
        self._hasher = hasher
        self._lane = _Lane(disk, self.write_and_hash, self._through, self._lane_failed)

    @property
    def behind(self) -> int:
        """Bytes received and not yet written and hashed (what the writer holds)."""
        return self._lane.behind

    @property
    def order_key(self) -> object:
        """The key of the file's writes on the disk pool: work on the partial that must
        wait for them (closing it, deleting it) is queued with it."""
        return self._lane

    def add(self, data: bytes) -> None:
        """Queue a chunk of the body; pause the upstream if too much is queued."""
        self._lane.add(data)
        if not self.paused and self.behind > self.limit:
            self.paused = True
            self._pause()

    def flushed(self) -> Deferred[None]:
        """Fires once every chunk added so far is written and hashed (never, after a failure)."""
        if not self.behind:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._flushed.append(waiter)
        return waiter

    def close(self) -> None:
        """Stop: drop what is queued (the batch on the pool ends; nothing is told)."""
        self._lane.close()
        self._flushed = []

    def write_and_hash(self, batch: list[bytes]) -> None:
        """On the pool: each chunk of the batch into the file, then into the hash (both
        release the GIL), in order."""
        for data in batch:
            self.partial.write(data)
            self._hasher.update(data)

    def _through(self, count: int) -> None:
        """A batch is in the file and the hash: followers may send it; resume the
        upstream, or tell those waiting for a flush."""
        self.written += count
        self._progressed()
        if self._lane.closed:
            return
        if self.paused and self.behind <= self.limit:
            self.paused = False
            self._resume()
        if not self.behind:
            waiters, self._flushed = self._flushed, []
            for waiter in waiters:
                waiter.callback(None)

    def _lane_failed(self, failure: Failure) -> None:
        self.close()
        self._failed(failure)
