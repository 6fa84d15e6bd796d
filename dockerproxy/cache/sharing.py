"""One cache directory, several workers: what a worker's L{BlobCache} does about the others.

Without it (one process) nothing changes. With it (L{dockerproxy.workers}), a blob
this worker does not know may be committed by another (L{BlobCache.adopt} finds it
on the disk) or being filled by one (followed as an L{ElsewhereFill}); and before a
worker asks the upstream for a blob it claims it (L{dockerproxy.cache.flocks}), so
that however many workers get a miss at once, one upstream GET is made: a worker
that finds the blob claimed waits until the fill is announced and follows it. The
size bound is the directory's (L{dockerproxy.cache.eviction}): a pass runs after each
commit here, and the blobs it removes leave this worker's index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from dockerproxy.cache.elsewhere import POLL, ElsewhereFill
from dockerproxy.cache.eviction import SharedBound
from dockerproxy.cache.flocks import Announced, Busy, Claim, FillLocks
from dockerproxy.cache.store import StoredBlob
from dockerproxy.digests import Digest

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache

log = Logger()


class Sharing:
    """The other workers' fills, as one worker's cache sees them (see the module)."""

    def __init__(self, cache: BlobCache, locks: FillLocks) -> None:
        self.cache = cache
        self.locks = locks
        self.elsewhere: dict[Digest, ElsewhereFill] = {}
        self.bound = SharedBound(cache.store)
        self.skipped = 0  # busy blobs the last pass left over the bound
        self._trimming = False
        self._again = False

    def discover(self, digest: Digest) -> bool:
        """Whether another worker committed C{digest} or is filling it (then it is
        followed from here: L{BlobCache.fill_for} has it)."""
        if self.cache.adopt(digest) or digest in self.elsewhere:
            return True
        found = self.locks.inspect(digest)
        if not isinstance(found, Announced):
            return False
        fill = ElsewhereFill(self.cache, digest, found)
        self.elsewhere[digest] = fill
        fill.start()  # it may end at once: committed (then adopted) or not
        return digest in self.elsewhere or self.cache.adopt(digest)

    def claim(self, digest: Digest) -> Claim | Busy:
        """This worker's claim on fetching C{digest}, or L{dockerproxy.cache.flocks.BUSY}."""
        return self.locks.claim(digest)

    async def wait(self, digest: Digest, timeout: float) -> None:
        """Until another worker's claim on C{digest} is announced (or ends), polling on
        the cache's clock for at most C{timeout} seconds."""
        clock = self.cache.clock
        deadline = clock.seconds() + timeout
        while clock.seconds() < deadline:
            found = self.locks.inspect(digest)
            if isinstance(found, Announced):
                found.close()
                return
            if found is None:
                return
            await deferLater(clock, POLL, lambda: None)

    def ended(self, fill: ElsewhereFill) -> None:
        if self.elsewhere.get(fill.digest) is fill:
            del self.elsewhere[fill.digest]
        if fill.committed:
            self.cache.adopt(fill.digest)

    def stop(self) -> None:
        for fill in list(self.elsewhere.values()):
            fill.stop("the cache is stopping")

    def trim(self) -> None:
        """A pass over the directory on the disk pool, soon; one at a time in this worker
        (asked for meanwhile, another follows it)."""
        max_size = self.cache.max_size
        if max_size is None:
            return
        if self._trimming:
            self._again = True
            return
        self._trimming = True
        room = max(max_size - self.cache.reserved_bytes, 0)  # this worker's fills to come
        passed = self.cache.disk.run(self.bound.trim, room)
        passed.addCallbacks(self._trimmed, self._trim_failed)

    def _trimmed(self, result: tuple[list[StoredBlob], int]) -> None:
        removed, self.skipped = result
        for blob in removed:
            self.cache.drop(blob.digest)
            self.cache.evictions += 1
        self._passed()

    def _trim_failed(self, failure: Failure) -> None:
        log.warn("blob cache: the shared size bound pass failed: {error}", error=failure.value)
        self._passed()

    def _passed(self) -> None:
        self._trimming = False
        if self._again:
            self._again = False
            self.trim()
