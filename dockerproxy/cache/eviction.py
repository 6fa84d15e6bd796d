"""One size bound over the blobs of all the workers that share a cache directory.

Each worker keeps its own in-memory index (L{BlobCache}); the bound is the
directory's. A pass (L{SharedBound.trim}) lists C{blobs/} and removes the least
recently used blobs until what is left fits. It runs on the disk pool, under a
cache-wide lock (C{tmp/evict.lock}, a blocking C{flock} there, never in the reactor
thread), so two workers never choose victims from two views of one directory.

Why the directory and its mtimes, and not a shared index (sqlite3 in WAL mode, say):
C{blobs/} already I{is} an index every worker writes to atomically (a commit is a
rename), and a blob's mtime is its last use (each worker touches what it serves), so
the least-recently-used order is on the disk already. A second index would have to
be kept in step with the directory through crashes and C{kill -9}, and could
disagree with it; the directory cannot disagree with itself. The cost is a scan (a
C{stat} per blob: milliseconds for thousands of blobs) per pass, and a pass runs
after a commit, not per request.

A blob another worker is sending is never removed: every sender holds C{LOCK_SH}
on its descriptor (L{hold}), and a pass unlinks a blob only under C{LOCK_EX |
LOCK_NB}, skipping a busy one (the next pass, once it is idle, may take it).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dockerproxy.cache.flocks import try_lock
from dockerproxy.cache.store import FilesystemStore, StoredBlob


def hold(fd: int) -> bool:
    """Mark an open blob as being sent (C{False}: a pass is removing it right now)."""
    return try_lock(fd, fcntl.LOCK_SH)


def remove_unless_busy(path: Path) -> bool | None:
    """Unlink C{path} unless a sender holds it: C{True} removed, C{False} busy, C{None}
    already gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if not try_lock(fd, fcntl.LOCK_EX):
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return None
        return True
    finally:
        os.close(fd)


class SharedBound:
    """The passes of one worker over the shared directory (see the module)."""

    def __init__(self, store: FilesystemStore) -> None:
        self.store = store
        self.lock_path = store.tmp_dir / "evict.lock"

    def trim(self, max_size: int) -> tuple[list[StoredBlob], int]:
        """Blocking (the disk pool): remove least recently used blobs until the directory
        holds at most C{max_size} bytes; the blobs removed, and how many busy ones were
        skipped."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another worker's pass
            blobs = self.store.scan()
            total = sum(blob.size for blob in blobs)
            removed: list[StoredBlob] = []
            skipped = 0
            for blob in blobs:
                if total <= max_size:
                    break
                outcome = remove_unless_busy(self.store.blob_path(blob.digest))
                if outcome is False:
                    skipped += 1
                    continue
                total -= blob.size
                if outcome:
                    removed.append(blob)
            return removed, skipped
        finally:
            os.close(fd)  # and the lock with it
