"""Which worker fills a blob: a lock file per digest, shared through the cache directory.

With several workers on one cache directory (L{dockerproxy.workers}) a blob must go
upstream once, whichever workers its clients reach. The worker that will fetch it
first I{claims} it: it takes C{flock(LOCK_EX | LOCK_NB)} on C{tmp/fill-<alg>-<hex>.lock}
and holds it from before its upstream request until the blob is committed (renamed
into C{blobs/}) or the fill has failed. Once the upstream's answer is known it
I{announces} the fill: the body's length, written into the lock file, and the
partial file, at the path every worker can work out (C{tmp/fill-<alg>-<hex>.partial}).

Another worker that finds the lock held follows the partial (L{dockerproxy.cache.elsewhere});
finding it held but not yet announced, it waits; finding it free, it may claim it. The
kernel drops a lock whose holder died (even by C{kill -9}), so a claim never outlives
its worker; the lock file is unlinked by its holder only (while holding it), and a
claimer checks that the file it locked is still the one at the path, so two workers
never both hold a claim on one digest.

Every call here is a non-blocking system call on a small local file (C{LOCK_NB}
throughout): cheap enough for the reactor thread, like the C{open()} of a blob file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dockerproxy.digests import Digest

CLAIM_TRIES = 3  # a lock file replaced under us this many times in a row: give up for now


# How a fill ended, written into its lock file as it is released: the body was verified
# (committed, or kept from the cache: it is all in the file), the cache gave up on it for
# its own reasons (the bytes so far are the upstream's), or the body was wrong.
VERIFIED, ABANDONED, FAILED = "verified", "abandoned", "failed"
_PAD = 256  # an outcome overwrites the whole announcement


class Busy:
    """Another worker has claimed the digest but not announced its fill yet."""


BUSY = Busy()


@dataclass
class Claim:
    """This worker's claim on a digest (see the module): release it exactly once."""

    fd: int
    lock_path: Path
    partial_path: Path
    released: bool = False

    def announce(self, length: int | None) -> None:
        """The fill starts: other workers may follow its partial file from now on."""
        os.pwrite(self.fd, json.dumps({"length": length}).encode().ljust(_PAD), 0)

    def release(self, outcome: str | None = None) -> None:
        """The blob is committed, or the fill is over (its C{outcome}, for its followers
        elsewhere: L{VERIFIED}, L{ABANDONED} or L{FAILED}): the path goes first, then
        the lock."""
        if self.released:
            return
        self.released = True
        if outcome is not None:
            os.pwrite(self.fd, json.dumps({"outcome": outcome}).encode().ljust(_PAD), 0)
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


@dataclass
class Announced:
    """Another worker's fill in progress: its lock file and partial file, open here."""

    lock_fd: int
    partial_fd: int
    partial_path: Path
    length: int | None

    def outcome(self) -> str | None:
        """How the fill ended, once its claim has (None: its worker died first)."""
        try:
            return str(json.loads(os.pread(self.lock_fd, _PAD, 0))["outcome"])
        except (ValueError, KeyError):
            return None

    def close(self) -> None:
        os.close(self.partial_fd)
        os.close(self.lock_fd)


class FillLocks:
    """The claims on the blobs of one cache directory's C{tmp/}."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir

    def lock_path(self, digest: Digest) -> Path:
        return self.tmp_dir / f"fill-{digest.algorithm}-{digest.hex}.lock"

    def partial_path(self, digest: Digest) -> Path:
        return self.tmp_dir / f"fill-{digest.algorithm}-{digest.hex}.partial"

    def claim(self, digest: Digest) -> Claim | Busy:
        """Claim C{digest} for this worker, or L{BUSY}: another one holds it."""
        path = self.lock_path(digest)
        for _ in range(CLAIM_TRIES):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if not try_lock(fd, fcntl.LOCK_EX):
                os.close(fd)
                return BUSY
            if _same_file(fd, path):
                os.ftruncate(fd, 0)  # an announcement of a fill whose worker died
                return Claim(fd, path, self.partial_path(digest))
            os.close(fd)  # released and unlinked between our open and our lock: again
        return BUSY

    def inspect(self, digest: Digest) -> Announced | Busy | None:
        """Another worker's fill of C{digest}: L{Announced} (open to follow), L{BUSY}
        (claimed, not announced yet), or None: nobody holds a claim."""
        try:
            lock_fd = os.open(self.lock_path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if not held(lock_fd):
            os.close(lock_fd)
            return None
        announcement = os.pread(lock_fd, _PAD, 0)
        if not announcement:
            os.close(lock_fd)
            return BUSY
        length = json.loads(announcement)["length"]
        partial = self.partial_path(digest)
        try:
            partial_fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # committed (or failed) just now
            os.close(lock_fd)
            return None
        return Announced(lock_fd, partial_fd, partial, length)

    def sweep(self) -> int:
        """Delete the lock and partial files of fills whose worker died; those of live
        workers stay. Returns how many were deleted."""
        swept = 0
        for lock in self.tmp_dir.glob("fill-*.lock"):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if try_lock(fd, fcntl.LOCK_EX) and _same_file(fd, lock):
                    lock.with_suffix(".partial").unlink(missing_ok=True)
                    lock.unlink(missing_ok=True)
                    swept += 1
            finally:
                os.close(fd)
        return swept


def held(lock_fd: int) -> bool:
    """Whether another open file holds C{lock_fd}'s file locked (its claim stands)."""
    if not try_lock(lock_fd, fcntl.LOCK_SH):
        return True
    fcntl.flock(lock_fd, fcntl.LOCK_UN)
    return False


def try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
