"""The committed blobs a worker knows, least recently used first, and their eviction.

L{LruIndex} keeps the bytes they take, the pins that spare the ones being served or
filled, and removes what L{LruIndex.evict} is told must go. It decides what goes;
when to evict (a fill starting, a commit, a pin released) is the L{BlobCache}'s,
which knows the fills under way and the bound. The disk follows on the disk pool:
an evicted blob leaves the index at once and its file later (its bytes count as
free space meanwhile); a blob's last use is its file's mtime, so a restart finds
the same order.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.eviction import remove_unless_busy
from dockerproxy.cache.store import FilesystemStore, StoredBlob
from dockerproxy.digests import Digest

log = Logger()


@dataclass
class Entry:
    """A committed blob in the index."""

    size: int
    path: Path


class LruIndex:
    """Committed blobs in LRU order, the bytes they take and the pins that spare them.

    C{removed} is called with each digest that leaves the index. C{shared}: other
    workers use the directory, so an evicted blob's file stays while one of them
    is sending it (L{remove_unless_busy}).
    """

    def __init__(
        self,
        store: FilesystemStore,
        disk: DiskWork,
        clock: IReactorTime,
        *,
        shared: bool,
        removed: Callable[[Digest], object],
    ) -> None:
        self.store = store
        self.disk = disk
        self.clock = clock
        self.shared = shared
        self.removed = removed
        self._entries: OrderedDict[Digest, Entry] = OrderedDict()  # least recently used first
        self._last_touched: Digest | None = None
        self._bytes = 0
        self._freeing = 0  # bytes of evicted blobs whose files are not unlinked yet
        self._pins: Counter[Digest] = Counter()

    def load(self, blobs: Iterable[StoredBlob]) -> None:
        """The index is C{blobs}, least recently used first (the store's recovery)."""
        self._entries.clear()
        self._bytes = 0
        for blob in blobs:
            self.add(blob.digest, blob.size, self.store.blob_path(blob.digest))

    def add(self, digest: Digest, size: int, path: Path) -> None:
        """Blob C{digest}, committed at C{path}, as the most recently used."""
        previous = self._entries.pop(digest, None)
        if previous is not None:
            self._bytes -= previous.size
        self._entries[digest] = Entry(size, path)
        self._bytes += size

    def adopt(self, digest: Digest) -> bool:
        """Whether blob C{digest} is committed: in the index, or on the disk, where
        another worker committed it (it enters the index, as the most recently used)."""
        if digest in self._entries:
            return True
        path = self.store.blob_path(digest)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return False
        self.add(digest, size, path)
        return True

    def get(self, digest: Digest) -> Entry | None:
        return self._entries.get(digest)

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def used_bytes(self) -> int:
        """Bytes of committed blobs."""
        return self._bytes

    @property
    def pinned(self) -> int:
        """How many blobs are pinned."""
        return len(self._pins)

    def room(self, unwritten: int) -> int | None:
        """The most the disk can take beyond C{unwritten} bytes still to come: its free
        space less those, plus what eviction could free (C{None}: free space unknown)."""
        free = self.free_bytes()
        if free is None:
            return None
        pinned = sum(self._entries[d].size for d in self._pins if d in self._entries)
        return max(free - unwritten, 0) + self._bytes - pinned

    def lru_order(self) -> list[Digest]:
        """Committed digests, least recently used (next to go) first."""
        return list(self._entries)

    def mark_used(self, digest: Digest) -> None:
        """LRU order in memory, and on disk (mtime) for restarts.

        A blob used again right after its own last touch is already the newest on
        disk, so the usual burst of hits on one blob costs one syscall, on the
        disk pool; nobody waits for it (a failure is logged).
        """
        self._entries.move_to_end(digest)
        if digest != self._last_touched:
            self._last_touched = digest
            self.disk.background(
                f"touch {digest}", self.store.touch, digest, self.clock.seconds(), key=digest
            )

    def pin(self, digest: Digest) -> None:
        self._pins[digest] += 1

    def unpin(self, digest: Digest) -> bool:
        """Whether that was C{digest}'s last pin (so it may go now)."""
        self._pins[digest] -= 1
        if self._pins[digest] > 0:
            return False
        del self._pins[digest]
        return True

    def free_bytes(self) -> int | None:
        """The disk's free space, counting evicted blobs whose unlink is still queued."""
        free = self.store.free_bytes()
        return None if free is None else free + self._freeing

    def evict(self, limit: int | None, unwritten: int) -> int:
        """Remove least recently used unpinned blobs until they take at most C{limit}
        bytes (C{None}: no limit) and the disk has room for C{unwritten} more; how
        many went."""
        free = self.free_bytes() if unwritten else None
        short = 0 if free is None else unwritten - free  # bytes the disk lacks
        evicted = 0
        for digest in list(self._entries):
            if (limit is None or self._bytes <= limit) and short <= 0:
                break
            if not self._pins[digest]:
                short -= self._entries[digest].size
                self.forget(digest)
                evicted += 1
        return evicted

    def forget(self, digest: Digest) -> None:
        """Out of the index now (nothing new is served from it), off the disk soon."""
        entry = self._entries.pop(digest)
        self._bytes -= entry.size
        if self._last_touched == digest:
            self._last_touched = None
        self._freeing += entry.size
        removed: Deferred[object]
        if not self.shared:
            removed = self.disk.run(self.store.remove, digest, key=digest)
        else:  # not if another worker is sending it
            removed = self.disk.run(remove_unless_busy, entry.path, key=digest)
        removed.addErrback(
            lambda failure: log.warn(
                "blob cache: cannot remove {digest}: {error}", digest=digest, error=failure.value
            )
        )
        removed.addBoth(self._freed, entry.size)
        self.removed(digest)

    def drop(self, digest: Digest) -> None:
        """Out of the index: another worker removed it from the disk."""
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        self._bytes -= entry.size
        if self._last_touched == digest:
            self._last_touched = None
        self.removed(digest)

    def _freed(self, _: object, size: int) -> None:
        self._freeing -= size
