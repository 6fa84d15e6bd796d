"""The blob cache's files: committed blobs, partial fills and small JSON documents.

Layout under the root (one filesystem, so that C{os.replace} from C{tmp/} is atomic)::

    blobs/<alg>/<hex[:2]>/<hex>   committed, verified, never modified again
    tmp/                          partial fills and metadata being written; emptied at start
    meta/<key>.json               small JSON documents

A blob appears under C{blobs/} only through L{FilesystemStore.commit}, an atomic rename
of a complete file, so a crash or C{kill -9} mid-fill leaves only a file in C{tmp/},
which L{FilesystemStore.recover} deletes. A blob's mtime is its last use, so the
least-recently-used order survives restarts. Nothing here uses Twisted: every call
is a plain, blocking system call on a local disk, and the proxy makes the slow ones
(L{FilesystemStore.commit}, L{FilesystemStore.write_meta}, L{FilesystemStore.remove},
L{FilesystemStore.touch}) from the threads of its disk pool, several at once: each
is safe to call from any thread, on different files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from dockerproxy.cache.writeback import Writeback
from dockerproxy.digests import ALGORITHMS, Digest

log = Logger()

# The meta document holding the proxy's counters (BlobCache.stats), for the admin command.
STATS_KEY = "stats"
# The lock file of read-modify-writes of documents (not a .json: never listed as one).
UPDATE_LOCK = ".update.lock"
_HEX_RE = re.compile(r"[0-9a-f]+")
_META_COMPONENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_EMPTY_DIGESTS = {alg: hashlib.new(alg, b"").hexdigest() for alg in ALGORITHMS}


@dataclass(frozen=True)
class StoredBlob:
    """A committed blob as found on disk: C{last_used} is its mtime."""

    digest: Digest
    size: int
    last_used: float


class Partial:
    """A blob being written to C{tmp/}: unbuffered, so readers see each write at once."""

    def __init__(self, path: Path, fd: int, writeback: Writeback | None = None) -> None:
        self.path = path
        self.size = 0
        self._fd: int | None = fd
        self._writeback = writeback

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError(f"write to closed partial {self.path}")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)
        if self._writeback is not None:
            self._writeback.wrote(self._fd, self.size)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def discard(self) -> None:
        """Close and delete: a failed fill leaves nothing behind."""
        self.close()
        self.path.unlink(missing_ok=True)


class FilesystemStore:
    """Blob files under C{root}; see the module docstring for the layout.

    C{fsync} (on by default): L{commit} flushes a blob's data to disk before its
    rename, and L{write_meta} its document. Cached blobs are served by digest and
    never re-hashed, so a power loss must not leave a committed name over data
    that never reached the disk (ext4 without C{auto_da_alloc}, XFS, btrfs can).
    The directory is not fsynced: a rename lost to a power cut is a cache miss,
    not corruption. The cost is one blocking flush per commit of whatever of the
    blob the kernel has not yet written back; turn it off for a throwaway cache.
    """

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.blobs_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.meta_dir = self.root / "meta"
        self._used: int | None = None
        self._used_lock = threading.Lock()  # commits and removals run on several threads

    # ----------------------------------------------------------------- start-up

    def create(self) -> None:
        """Make the cache's directories. Not done on construction: building the
        service tree touches no disk (the proxy's cache service calls L{recover})."""
        for directory in (self.blobs_dir, self.tmp_dir, self.meta_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def recover(self, clear_tmp: bool = True) -> list[StoredBlob]:
        """Make the directories, delete leftovers in C{tmp/}, drop malformed files,
        list committed blobs.

        Called once at start, before any fill: anything in C{tmp/} is a fill or a
        metadata write that a crash or C{kill -9} cut short. The list is ordered
        least recently used first. Workers sharing the directory (C{clear_tmp}
        false) leave C{tmp/} alone: it holds the other workers' fills, and their
        supervisor cleared it before any of them started.
        """
        self.create()
        if clear_tmp:
            self.clear_tmp()
        found = list(self._scan(clean=True))
        self._used = sum(blob.size for blob in found)
        found.sort(key=lambda blob: (blob.last_used, blob.digest))
        return found

    def scan(self) -> list[StoredBlob]:
        """Committed blobs on disk, least recently used first, changing nothing."""
        found = list(self._scan(clean=False))
        found.sort(key=lambda blob: (blob.last_used, blob.digest))
        return found

    def clear_tmp(self) -> None:
        with os.scandir(self.tmp_dir) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    def _scan(self, clean: bool) -> Iterator[StoredBlob]:
        """Committed blobs on disk; with C{clean}, malformed files are deleted."""
        for alg_entry in _entries(self.blobs_dir):
            length = ALGORITHMS.get(alg_entry.name)
            if length is None or not alg_entry.is_dir(follow_symlinks=False):
                self._malformed(alg_entry, clean)
                continue
            for fan_entry in _entries(alg_entry.path):
                fan = fan_entry.name
                if (
                    len(fan) != 2
                    or not _HEX_RE.fullmatch(fan)
                    or not fan_entry.is_dir(follow_symlinks=False)
                ):
                    self._malformed(fan_entry, clean)
                    continue
                for entry in _entries(fan_entry.path):
                    blob = self._blob_entry(alg_entry.name, fan, entry)
                    if blob is None:
                        self._malformed(entry, clean)
                    else:
                        yield blob

    def _blob_entry(self, algorithm: str, fan: str, entry: os.DirEntry[str]) -> StoredBlob | None:
        name = entry.name
        if (
            len(name) != ALGORITHMS[algorithm]
            or not _HEX_RE.fullmatch(name)
            or not name.startswith(fan)
            or not entry.is_file(follow_symlinks=False)
        ):
            return None
        stat = entry.stat(follow_symlinks=False)
        # Only the empty blob is empty: any other empty file is a commit whose data
        # never reached the disk (fsync off and a power cut).
        if stat.st_size == 0 and name != _EMPTY_DIGESTS[algorithm]:
            return None
        return StoredBlob(Digest(algorithm, name), stat.st_size, stat.st_mtime)

    def _malformed(self, entry: os.DirEntry[str], clean: bool) -> None:
        if entry.is_dir(follow_symlinks=False):
            log.warn("blob cache: ignoring unexpected directory {path}", path=entry.path)
            return
        if clean:
            log.warn("blob cache: removing malformed file {path}", path=entry.path)
            Path(entry.path).unlink(missing_ok=True)

    # ----------------------------------------------------------------- blobs

    def blob_path(self, digest: Digest) -> Path:
        """Where blob C{digest} lives: a L{Digest} is only ever lowercase hex, so always
        a file name under C{blobs/}."""
        return self.blobs_dir / digest.algorithm / digest.hex[:2] / digest.hex

    def open_partial(self) -> Partial:
        """A new, uniquely named, empty file in C{tmp/}, open for writing."""
        fd, name = tempfile.mkstemp(prefix="fill-", suffix=".partial", dir=self.tmp_dir)
        return Partial(Path(name), fd, Writeback() if self.fsync else None)

    def open_partial_at(self, path: Path) -> Partial:
        """An empty file at C{path} (in C{tmp/}, named for its digest so that other
        workers find it), open for writing; whatever a dead fill left there goes."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        return Partial(path, fd)

    def commit(self, partial: Partial, digest: Digest) -> Path:
        """Make C{partial} the blob C{digest}: flush (see C{fsync}), close, rename atomically.

        The caller has verified the content. Readers holding the partial open keep
        reading the same file under its new name.
        """
        target = self.blob_path(digest)
        if self.fsync:
            if partial.closed:
                _fsync_path(partial.path)
            else:
                partial.sync()
        partial.close()
        size = partial.path.stat().st_size
        target.parent.mkdir(parents=True, exist_ok=True)
        previous = _size_or_zero(target)
        os.replace(partial.path, target)
        self._count(size - previous)
        return target

    def remove(self, digest: Digest) -> None:
        path = self.blob_path(digest)
        size = _size_or_zero(path)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._count(-size)

    def _count(self, change: int) -> None:
        with self._used_lock:
            if self._used is not None:
                self._used += change

    def touch(self, digest: Digest, when: float) -> None:
        """Record a use: the mtime is the LRU order after a restart."""
        try:
            os.utime(self.blob_path(digest), (when, when))
        except FileNotFoundError:
            pass

    def free_bytes(self) -> int | None:
        """Bytes free for this process on the cache's filesystem; C{None} if unknown."""
        try:
            stat = os.statvfs(self.root)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def used_bytes(self) -> int:
        """Bytes of committed blobs (counted once by a scan, then kept up to date)."""
        if self._used is None:
            self._used = sum(blob.size for blob in self._scan(clean=False))
        return self._used

    # ----------------------------------------------------------------- metadata

    def meta_path(self, key: str) -> Path:
        """C{meta/<key>.json}; C{key} is C{/}-separated safe components, never C{..} or absolute."""
        components = key.split("/")
        if not all(_META_COMPONENT_RE.fullmatch(c) for c in components):
            raise ValueError(f"unsafe metadata key {key!r}")
        return self.meta_dir.joinpath(*components[:-1], components[-1] + ".json")

    def read_meta(self, key: str) -> Any | None:
        """The document under C{key}, or C{None} when there is none (or it is unreadable)."""
        path = self.meta_path(key)
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            log.warn(
                "blob cache: ignoring unreadable metadata {path}: {error}",
                path=str(path),
                error=str(e),
            )
            return None

    def list_meta(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """Every readable document directly under C{prefix}, as (key, document)."""
        directory = self.meta_path(prefix + "/x").parent
        for entry in _entries(directory):
            name = entry.name
            if name.endswith(".json") and entry.is_file(follow_symlinks=False):
                key = f"{prefix}/{name.removesuffix('.json')}"
                document = self.read_meta(key)
                if document is not None:
                    yield key, document

    def remove_meta(self, key: str) -> None:
        self.meta_path(key).unlink(missing_ok=True)

    def update_meta(self, key: str, change: Callable[[Any | None], Any | None]) -> None:
        """Replace the document under C{key} with C{change} of it (C{None}: remove it).

        Processes sharing this store (workers) update one document with no lost
        update: the read, C{change} and the write hold the store's update lock (a
        C{flock}, so it is released if the process dies). Blocking: call it from
        a pool thread.
        """
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.meta_dir / UPDATE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            updated = change(self.read_meta(key))
            if updated is None:
                self.remove_meta(key)
            else:
                self.write_meta(key, updated)
        finally:
            os.close(fd)  # releases the lock

    def write_meta(self, key: str, value: Any) -> None:
        """Replace the document under C{key} atomically: readers see the old or the new one."""
        path = self.meta_path(key)
        data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        fd, name = tempfile.mkstemp(prefix="meta-", suffix=".json", dir=self.tmp_dir)
        partial = Partial(Path(name), fd)
        try:
            partial.write(data)
            if self.fsync:
                partial.sync()
            partial.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial.path, path)
        except BaseException:
            partial.discard()
            raise


def _entries(path: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
