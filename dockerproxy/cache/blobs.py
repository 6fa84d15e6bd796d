"""The blob cache: verified fills from upstream, coalesced followers, LRU eviction.

A fill (L{fills.Fill}) writes an upstream body to a partial file at upstream speed,
hashing as it goes (both on the disk pool, L{fillwriter}), and is committed only if
its size and digest check out. Clients never slow a fill down: each one follows the
file (a L{senders.Sender} reading by offset), is told by the fill when more bytes
land, and holds back the body's final byte until the blob is committed, so a body
that then fails verification is aborted and can never look complete.

L{BlobCache} ties the parts together and decides when to evict: the committed
blobs are its L{lruindex.LruIndex}, the fills under way its L{fills.FillsInProgress},
and a response's file is opened by L{serving} for its L{senders.Sender} (which
uses C{os.sendfile} where it can).

What can block for long runs on the disk pool (L{DiskWork}), never in the reactor
thread: a commit (an fsync of up to the whole blob, then a rename), the touch of
a used blob, the unlink of an evicted blob or of a failed fill's partial file.
Their results are applied back in the reactor thread: a blob enters the index
(and its fill's followers get their last byte) only once its commit is done; an
evicted blob leaves the index at once, and its file later. A fill's writes and
its hashing run there too, in order (L{fillwriter}): at a couple of GB/s they
would otherwise share one core with receiving and sending. Reads for clients
(from the page cache, or sendfile() with no copy), opening files and C{statvfs}
stay in the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.server import Request

from dockerproxy.cache import serving
from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.elsewhere import ElsewhereFill
from dockerproxy.cache.fills import Fallback, Fill, FillsInProgress
from dockerproxy.cache.flocks import Claim, FillLocks
from dockerproxy.cache.lruindex import LruIndex
from dockerproxy.cache.sharing import Sharing
from dockerproxy.cache.store import FilesystemStore, Partial
from dockerproxy.digests import Digest

log = Logger()

DEFAULT_IDLE_TIMEOUT = 60.0


class FillInProgress(RuntimeError):
    """L{BlobCache.start_fill} for a digest that is already being filled."""


class TooLarge(ValueError):
    """L{BlobCache.start_fill} for a body longer than the cache can keep: relay it instead."""


@dataclass(frozen=True)
class CachedBlob:
    """A committed, verified blob."""

    digest: Digest
    size: int
    path: Path


class BlobCache:
    """Committed blobs in a size-bounded LRU index (L{LruIndex}), plus the fills in progress.

    A blob being served or filled is pinned and never evicted, so the bound
    (C{max_size} bytes, C{None} for none) holds except for pinned blobs. A fill
    with a known length counts against the bound from its start, and eviction
    also makes room on the disk for what such fills still have to write.

    No fill writes more than L{room} allowed when it started: the bound, the disk's
    free space (plus what eviction can free) and C{max_blob_size}. A body of known
    length beyond that is refused (L{TooLarge}); one of unknown length is abandoned
    when it gets there.

    C{on_removed}, if set, is called with the digest of each blob that leaves the
    index (evicted, or found gone from the disk), so records about it can go too.

    C{disk} runs the store's blocking calls (see the module docstring); each
    blob's calls are keyed by its digest, so they reach the disk in order.
    """

    def __init__(
        self,
        store: FilesystemStore,
        clock: IReactorTime,
        max_size: int | None,
        *,
        disk: DiskWork,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_blob_size: int | None = None,
        on_removed: Callable[[Digest], object] | None = None,
        locks: FillLocks | None = None,
    ) -> None:
        self.store = store
        # With other workers on the directory (dockerproxy.workers): their fills.
        self.sharing = Sharing(self, locks) if locks is not None else None
        self.disk = disk
        self.on_removed = on_removed
        self.clock = clock
        self.max_size = max_size
        self.max_blob_size = max_blob_size
        self.idle_timeout = idle_timeout
        self.hits = 0
        self.misses = 0
        self.fills = 0
        self.failed_fills = 0
        self.evictions = 0
        self.bytes_served = 0
        self.coalesced = 0
        # The committed blobs: LRU order, pins, what eviction removes.
        self.index = LruIndex(store, disk, clock, shared=locks is not None, removed=self._removed)
        self._fills = FillsInProgress()

    # ----------------------------------------------------------------- index

    def start(self) -> None:
        """Load the committed blobs in LRU order (partials of a crash are deleted).

        In the reactor thread, at the service's start: the listeners start after
        it, so no request is answered before the index is whole, and a scan of
        the cache's directories blocks nothing that is running yet.
        """
        # Other workers' partial files are theirs: only those of dead fills go.
        self.index.load(self.store.recover(clear_tmp=self.sharing is None))
        if self.sharing is not None:
            self.sharing.locks.sweep()
            self.sharing.trim()
        self._evict()

    def stop(self) -> None:
        """Abandon every fill in progress, e.g. at shutdown: no partial outlives the process.

        A verified fill whose commit is under way is kept: wait for C{disk.idle()}.
        """
        for fill in self._fills.list():
            fill.stop("the cache is stopping")
        if self.sharing is not None:
            self.sharing.stop()

    def lookup(self, digest: Digest) -> CachedBlob | None:
        """The committed blob C{digest}, marked recently used; C{None} (a miss) otherwise."""
        blob = self.get(digest)
        if blob is None:
            self.misses += 1
            return None
        self.hits += 1
        self.index.mark_used(digest)
        return blob

    def get(self, digest: Digest) -> CachedBlob | None:
        """The committed blob C{digest}, without counting a hit or miss or marking it used."""
        entry = self.index.get(digest)
        return None if entry is None else CachedBlob(digest, entry.size, entry.path)

    def __contains__(self, digest: object) -> bool:
        return digest in self.index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def used_bytes(self) -> int:
        """Bytes of committed blobs."""
        return self.index.used_bytes

    @property
    def reserved_bytes(self) -> int:
        """Bytes the fills under way here count against the bound."""
        return self._fills.reserved

    def lru_order(self) -> list[Digest]:
        """Committed digests, least recently used (next to go) first."""
        return self.index.lru_order()

    def stats(self) -> dict[str, int | None]:
        """The counters and the index's state, for the admin command and metrics."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "fills": self.fills,
            "failed_fills": self.failed_fills,
            "evictions": self.evictions,
            "bytes_served": self.bytes_served,
            "coalesced": self.coalesced,
            "blobs": len(self.index),
            "used_bytes": self.index.used_bytes,
            "max_size": self.max_size,
            "active_fills": len(self._fills),
            "pinned": self.index.pinned,
        }

    # ----------------------------------------------------------------- fills

    def fill_for(self, digest: Digest) -> Fill | ElsewhereFill | None:
        """The fill of C{digest} in progress here, or followed from another worker."""
        fill = self._fills.get(digest)
        if fill is None and self.sharing is not None:
            return self.sharing.elsewhere.get(digest)
        return fill

    def adopt(self, digest: Digest) -> bool:
        """Whether blob C{digest} is committed: in the index, or on the disk, where
        another worker committed it (it enters this worker's index)."""
        return self.index.adopt(digest)

    def fills_in_progress(self) -> list[Fill]:
        return self._fills.list()

    def start_fill(
        self,
        digest: Digest,
        response: IResponse,
        idle_timeout: float | None = None,
        claim: Claim | None = None,
    ) -> Fill:
        """Write C{response}'s body (a 200 from upstream) to the cache, verified by C{digest}.

        Raises L{FillInProgress} if C{digest} is already being filled, L{TooLarge}
        for a length beyond L{room} (nothing is written; the response is untouched)
        and C{ValueError} for a status other than 200. With this worker's C{claim}
        (L{Sharing.claim}) the fill writes where other workers follow it, and releases the
        claim when it ends; if it cannot start, the caller releases it.
        """
        if response.code != 200:
            raise ValueError(f"only a 200 response can fill the cache, not {response.code}")
        if digest in self._fills:
            raise FillInProgress(digest)
        length = None if response.length is UNKNOWN_LENGTH else int(response.length)
        room = self.room()
        if length is not None and room is not None and length > room:
            raise TooLarge(f"{digest} has {length} bytes; the cache can keep {room}")
        partial = (
            self.store.open_partial()
            if claim is None
            else self.store.open_partial_at(claim.partial_path)
        )
        fill = Fill(
            self,
            digest,
            partial,
            length,
            self.idle_timeout if idle_timeout is None else idle_timeout,
            room=room,
            max_blob_size=self.max_blob_size,
        )
        if claim is not None:
            claim.announce(length)
            fill.claim = claim
        self._fills.add(fill)
        self.index.pin(digest)
        self.fills += 1
        if length is not None:
            self._evict()
        try:
            response.deliverBody(fill)
        except BaseException:
            fill.stop("the response body could not be read")
            raise
        return fill

    def room(self) -> int | None:
        """The most bytes a fill starting now may write (C{None}: no bound).

        The least of C{max_size}, C{max_blob_size} and the disk's free space, less
        what fills under way still have to write, plus what eviction could free.
        """
        bounds = [b for b in (self.max_size, self.max_blob_size) if b is not None]
        disk = self.index.room(self._fills.unwritten())
        if disk is not None:
            bounds.append(disk)
        return min(bounds) if bounds else None

    def fits(self, length: int) -> bool:
        """Whether a fill of C{length} bytes starting now would be accepted."""
        room = self.room()
        return room is None or length <= room

    def _fill_verified(self, fill: Fill, partial: Partial) -> None:
        """Commit on the disk pool; until it is done the fill stays active, its
        followers hold back the last byte and the blob is not in the index."""
        committed = self.disk.run(self.store.commit, partial, fill.digest, key=fill.digest)
        committed.addCallbacks(
            lambda path: self._fill_committed(fill, path),
            lambda failure: self._fill_not_kept(fill, partial, failure),
        )

    def _fill_not_kept(self, fill: Fill, partial: Partial, failure: Failure) -> None:
        """Verified, but the disk would not take it: its followers still read it
        through their open descriptors; the cache does not keep it."""
        log.warn(
            "blob cache: cannot commit {digest}: {error}; served, not kept",
            digest=fill.digest,
            error=failure.value,
        )
        self.discard(partial)
        self._end_fill(fill)
        fill.done.callback(True)

    def discard(self, partial: Partial, after: Hashable | None = None) -> None:
        """Close and delete a partial file the cache will not keep, on the disk pool
        (C{after}: the key of the writes it must wait for)."""
        self.disk.background(f"remove {partial.path}", partial.discard, key=after)

    def _fill_committed(self, fill: Fill, path: Path) -> None:
        self.index.add(fill.digest, fill.written, path)
        fill.committed = True
        self.index.mark_used(fill.digest)
        self._end_fill(fill)
        fill.done.callback(True)
        if self.sharing is not None:
            self.sharing.trim()  # the bound is the directory's, over every worker

    def _fill_failed(self, fill: Fill, why: str) -> None:
        self.failed_fills += 1
        log.warn(
            "blob cache: fill of {digest} failed after {received} bytes: {why}",
            digest=fill.digest,
            received=fill.received,
            why=why,
        )
        self._end_fill(fill)
        fill.done.callback(False)

    def _end_fill(self, fill: Fill) -> None:
        self._fills.end(fill)
        self._unpin(fill.digest)

    # ----------------------------------------------------------------- serving

    def serve(
        self,
        request: Request,
        digest: Digest,
        byte_range: tuple[int, int | None] | None = None,
        fallback: Fallback | None = None,
    ) -> Deferred[bool]:
        """Send blob C{digest} (committed, or followed while it fills) as C{request}'s body.

        See the package docstring and L{serving}. Raises C{KeyError} if C{digest} is
        neither committed nor being filled, C{ValueError} for a malformed
        C{byte_range}. If the fill it follows is abandoned, the rest of the answer
        comes from C{fallback}; without one the response is aborted.
        """
        return serving.serve(self, request, digest, byte_range, fallback)

    # ----------------------------------------------------------------- eviction

    def _unpin(self, digest: Digest) -> None:
        if self.index.unpin(digest):
            self._evict()
            if self.sharing is not None and self.sharing.skipped:
                self.sharing.trim()  # the last pass left a busy blob over the bound

    def _evict(self) -> None:
        """Within C{max_size}, counting what fills of known length will add, and
        room on the disk for what they still have to write."""
        # Workers sharing the directory: the bound is a pass over all of it (sharing.trim).
        bound = self.max_size if self.sharing is None else None
        limit = None if bound is None else bound - self._fills.reserved
        self.evictions += self.index.evict(limit, self._fills.unwritten())

    def drop(self, digest: Digest) -> None:
        """Out of the index: another worker removed it from the disk."""
        self.index.drop(digest)

    def _removed(self, digest: Digest) -> None:
        if self.on_removed is not None:
            self.on_removed(digest)
