"""One cache directory, several workers: what a worker's L{BlobCache} does about the others.

Without it (one process) nothing changes. With it (L{dockerproxy.workers}), a blob
this worker does not know may be committed by another (L{BlobCache.adopt} finds it
on the disk) or being filled by one (followed as an L{ElsewhereFill}); and before a
worker asks the upstream for a blob it claims it (L{dockerproxy.cache.flocks}), so
that however many workers get a miss at once, one upstream GET is made: a worker
that finds the blob claimed waits until the fill is announced and follows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.task import deferLater

from dockerproxy.cache.elsewhere import POLL, ElsewhereFill
from dockerproxy.cache.flocks import Announced, Busy, Claim, FillLocks
from dockerproxy.digests import Digest

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache


class Sharing:
    """The other workers' fills, as one worker's cache sees them (see the module)."""

    def __init__(self, cache: BlobCache, locks: FillLocks) -> None:
        self.cache = cache
        self.locks = locks
        self.elsewhere: dict[Digest, ElsewhereFill] = {}

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
