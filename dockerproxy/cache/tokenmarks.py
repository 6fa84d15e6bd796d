"""Anonymous tokens the workers handed out, marked in the cache directory.

A token the proxy fetched for a client with no credentials (C{/v2/auth}) counts as
anonymous (L{dockerproxy.access.AccessCache.is_anonymous}): served what is public, and
a refusal with it revokes the repository's public record for everyone. With workers
(L{dockerproxy.workers}) the client's next request may reach another worker, which
would not know the token: a refusal it learned with it would not be shared, and the
worker that handed the token out would go on serving the repository from cache.

So each worker marks the tokens it hands out: an empty file C{tokens/<key>}, the key
being the credential's hash (never the token), whose mtime is the token's expiry,
written on the disk pool. A worker asks about a credential it does not know with one
C{stat} (a small call, in the reactor thread, as the cache opens its blob files).
Marks are bounded: every L{SWEEP} seconds a pass on the disk pool removes the expired
ones and, past L{MAX_MARKS}, the oldest.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.interfaces import IReactorTime

from dockerproxy.cache.diskio import DiskWork

SWEEP = 60.0  # seconds between two sweeps (one runs after a mark, when due)
MAX_MARKS = 100_000


class TokenMarks:
    """The marks of one cache directory (see the module)."""

    def __init__(
        self, root: Path, disk: DiskWork, clock: IReactorTime, limit: int = MAX_MARKS
    ) -> None:
        self.directory = root / "tokens"
        self.limit = limit
        self.disk = disk
        self.clock = clock
        self._swept = clock.seconds()

    def mark(self, key: str, expiry: float) -> None:
        """Credential C{key} is an anonymous token until C{expiry} (Unix time)."""
        self.disk.background("mark an anonymous token", self._write, key, expiry)
        now = self.clock.seconds()
        if now - self._swept >= SWEEP:
            self._swept = now
            self.disk.background("sweep the anonymous token marks", self.sweep, now)

    def expiry(self, key: str) -> float | None:
        """When credential C{key}'s mark expires, if another worker marked it."""
        try:
            return os.stat(self.directory / key).st_mtime
        except FileNotFoundError:
            return None

    def _write(self, key: str, expiry: float) -> None:
        self.directory.mkdir(exist_ok=True)
        path = self.directory / key
        path.touch()
        os.utime(path, (expiry, expiry))

    def sweep(self, now: float) -> int:
        """Blocking (the disk pool): remove the expired marks, and the oldest past
        the limit (L{MAX_MARKS}); how many were removed."""
        try:
            entries = [(e.stat().st_mtime, e.path) for e in os.scandir(self.directory)]
        except FileNotFoundError:
            return 0
        entries.sort()
        excess = max(len(entries) - self.limit, 0)
        removed = 0
        for index, (expiry, path) in enumerate(entries):
            if expiry > now and index >= excess:
                break
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
        return removed
