"""A fill's per-byte work off the reactor: its writes and its hashing, on the disk pool.

At relay speed (a couple of GB/s on loopback) the sha256 of a body and the copy of
it into the page cache each cost about as much CPU as receiving it: done in the
reactor thread, one core would receive, hash and write in turn. Both release the
GIL on large buffers, so here they run on the cache's disk pool (L{DiskWork}),
each in its own I{lane}: the reactor only receives, queues the chunk and sends.

Each lane runs one batch at a time, of every chunk queued while the previous one
ran, keyed so that its batches reach the disk (or the hash) in order; the two
lanes run side by side. L{FillWriter.written} counts the bytes in the file (what
followers may read); the fill verifies the digest once both lanes are flushed.

The bytes queued and not yet through both lanes are bounded: past
L{QUEUE_LIMIT} the fill pauses the upstream, and resumes it once they are down to
half of it, so a disk slower than the network costs memory of one bound per fill,
not of the blob.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.store import Partial

# Bytes received and not yet both written and hashed, past which the upstream is
# paused: a few batches' worth, so the lanes never wait for the network while the
# network waits for them, and little next to a process's footprint.
QUEUE_LIMIT = 8 * 1024 * 1024


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Lane:
    """Batches of chunks through one blocking call on the disk pool, in order."""

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
        self.queued: list[bytes] = []
        self.queued_bytes = 0
        self.running = 0  # bytes of the batch on the pool
        self.closed = False

    @property
    def behind(self) -> int:
        """Bytes given to this lane and not through it yet."""
        return self.queued_bytes + self.running

    def add(self, data: bytes) -> None:
        self.queued.append(data)
        self.queued_bytes += len(data)
        self._next()

    def close(self) -> None:
        """Drop what is queued; the batch on the pool ends, its outcome ignored."""
        self.closed = True
        self.queued = []
        self.queued_bytes = 0

    def _next(self) -> None:
        if self.running or not self.queued or self.closed:
            return
        batch, self.queued = self.queued, []
        self.running, self.queued_bytes = self.queued_bytes, 0
        ran = self.disk.run(self.work, batch, key=self)
        ran.addCallbacks(self._ran, self._failed)

    def _ran(self, _: object) -> None:
        count, self.running = self.running, 0
        if self.closed:
            return
        self.done(count)
        self._next()

    def _failed(self, failure: Failure) -> None:
        self.running = 0
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
        self._writes = _Lane(disk, self.write_chunks, self._wrote, self._lane_failed)
        self._hashes = _Lane(disk, self.hash_chunks, self._hashed, self._lane_failed)

    @property
    def behind(self) -> int:
        """Bytes received and not yet both written and hashed (what the writer holds)."""
        return max(self._writes.behind, self._hashes.behind)

    @property
    def order_key(self) -> object:
        """The key of the file's writes on the disk pool: work on the partial that must
        wait for them (closing it, deleting it) is queued with it."""
        return self._writes

    def add(self, data: bytes) -> None:
        """Queue a chunk of the body; pause the upstream if too much is queued."""
        self._writes.add(data)
        self._hashes.add(data)
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
        """Stop: drop what is queued (the batches on the pool end; nothing is told)."""
        self._writes.close()
        self._hashes.close()
        self._flushed = []

    def write_chunks(self, batch: list[bytes]) -> None:
        """On the pool: the batch into the file, in order."""
        for data in batch:
            self.partial.write(data)

    def hash_chunks(self, batch: list[bytes]) -> None:
        """On the pool: the batch into the hash (hashlib releases the GIL on large buffers)."""
        for data in batch:
            self._hasher.update(data)

    def _wrote(self, count: int) -> None:
        self.written += count
        self._progressed()
        self._moved()

    def _hashed(self, _: int) -> None:
        self._moved()

    def _moved(self) -> None:
        """A batch is through: resume the upstream, or tell those waiting for a flush."""
        if self._writes.closed:
            return
        if self.paused and self.behind <= self.limit // 2:
            self.paused = False
            self._resume()
        if not self.behind:
            waiters, self._flushed = self._flushed, []
            for waiter in waiters:
                waiter.callback(None)

    def _lane_failed(self, failure: Failure) -> None:
        self.close()
        self._failed(failure)
