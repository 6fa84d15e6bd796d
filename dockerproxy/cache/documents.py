"""The cache's small JSON documents (manifests, tags, access records, counters), written
off the reactor.

Each write is a temporary file, an fsync and a rename (L{FilesystemStore.write_meta}):
on the disk pool (L{DiskWork}), never in the reactor thread. Writes of one key are
coalesced: at most one is on the disk at a time, and while it is, only the newest
document waiting for that key is kept, to be written next. So the last write wins
on disk as it does in memory, and a burst of changes to one key (the access record
of a repository during a pull) costs at most two writes.

Until a document is on the disk, reads of its key answer it from memory: a caller
reads what it wrote, whatever the disk pool has got to.

Reads stay in the reactor thread. A cache hit reads one small file the page cache
holds (its writer just wrote it, or a hit before read it): an open and a read of a
few KiB, some tens of microseconds, and they do not wait for fsyncs of other files.
A round trip through the thread pool costs more than that (a hand-off to a thread,
a wake-up of the reactor) and would be added to every hit; see the README's
benchmark section for the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.store import FilesystemStore

log = Logger()

# A pending removal, as opposed to a pending document.
_REMOVED = object()


class _Update:
    """A pending change of a document: a function of the newest one (C{None}: none)."""

    def __init__(self, change: Callable[[Any | None], Any | None]) -> None:
        self.change = change

    def then(self, after: Callable[[Any | None], Any | None]) -> Callable[[Any | None], Any | None]:
        return lambda document: after(self.change(document))


class Documents:
    """C{store}'s metadata documents, written on C{disk}; the same methods as the store's.

    A document handed to L{write_meta} must not be changed afterwards: it is
    serialised on a pool thread, and answered to readers until then.
    """

    def __init__(self, store: FilesystemStore, disk: DiskWork) -> None:
        self.store = store
        self.disk = disk
        self._waiting: dict[str, Any] = {}  # key -> the newest document not yet on disk
        self._writing: dict[str, Any] = {}  # key -> the document being written now

    def read_meta(self, key: str) -> Any | None:
        """The newest document under C{key}: one not yet written, or the disk's."""
        return self._newest(key, (self._waiting, self._writing))

    def _newest(self, key: str, layers: tuple[dict[str, Any], ...]) -> Any | None:
        for i, pending in enumerate(layers):
            if key in pending:
                document = pending[key]
                if isinstance(document, _Update):
                    return document.change(self._newest(key, layers[i + 1 :]))
                return None if document is _REMOVED else document
        return self.store.read_meta(key)

    def list_meta(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """The documents on disk under C{prefix} (at start, when nothing is pending)."""
        return self.store.list_meta(prefix)

    def write_meta(self, key: str, value: Any) -> None:
        """Replace the document under C{key} (on the disk soon; readable here at once)."""
        self.store.meta_path(key)  # an unsafe key fails here, in the caller
        self._put(key, value)

    def remove_meta(self, key: str) -> None:
        self.store.meta_path(key)
        self._put(key, _REMOVED)

    def update_meta(self, key: str, change: Callable[[Any | None], Any | None]) -> None:
        """Replace the document under C{key} with C{change} of the newest one, under the
        store's update lock (L{FilesystemStore.update_meta}): for documents that
        other processes update too. C{change} runs on a pool thread."""
        self.store.meta_path(key)
        waiting = self._waiting.get(key)
        if isinstance(waiting, _Update):
            change = waiting.then(change)
        elif key in self._waiting:  # a whole document or a removal: change that instead
            change = _Update(lambda _: None if waiting is _REMOVED else waiting).then(change)
        self._put(key, _Update(change))

    def _put(self, key: str, document: Any) -> None:
        self._waiting[key] = document
        if key not in self._writing:
            self._write_next(key)

    def _write_next(self, key: str) -> None:
        document = self._writing[key] = self._waiting.pop(key)
        if document is _REMOVED:
            written = self.disk.run(self.store.remove_meta, key)
        elif isinstance(document, _Update):
            written = self.disk.run(self.store.update_meta, key, document.change)
        else:
            written = self.disk.run(self.store.write_meta, key, document)
        written.addErrback(self._failed, key)
        written.addBoth(self._written, key)

    def _failed(self, failure: Failure, key: str) -> None:
        """ENOSPC, EIO: the document is lost, as the cache's other state is on a bad disk."""
        log.warn("cache: cannot write metadata {key}: {error}", key=key, error=failure.value)

    def _written(self, _: object, key: str) -> None:
        del self._writing[key]
        if key in self._waiting:
            self._write_next(key)
