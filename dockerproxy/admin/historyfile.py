"""The status history on disk, so the charts survive a restart.

One JSON file (some tens of KiB for a full day), read once at start and
replaced once a minute: written to a temporary file beside it, fsynced and
renamed, so a crash leaves the old file or the new one, never half of one.
The write runs on the proxy's disk pool (L{dockerproxy.cache.diskio.DiskWork}),
like the cache's own metadata, never in the reactor thread; the document is
taken in the reactor thread and only serialised on the pool.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dockerproxy.admin.history import History
from dockerproxy.cache.diskio import DiskWork

log = Logger()

FILENAME = "status-history.json"
TEMPORARY = ".status-history-"  # the prefix of a write in progress
# A history file is some tens of KiB; anything far larger is not one.
MAX_FILE = 16 * 1024 * 1024


class HistoryFile:
    """Where C{history} is kept: C{path}, written on C{disk}."""

    def __init__(self, path: Path, disk: DiskWork) -> None:
        self.path = path
        self.disk = disk

    def load(self, history: History) -> None:
        """Restore C{history} from the file, if there is a good one (else log why not);
        delete the temporary files of writes a crash cut short."""
        for leftover in self.path.parent.glob(f"{TEMPORARY}*"):
            leftover.unlink(missing_ok=True)
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_FILE + 1)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warn("status history: cannot read {path}: {error}", path=str(self.path), error=e)
            return
        try:
            if len(data) > MAX_FILE:
                raise ValueError(f"over {MAX_FILE} bytes")
            history.restore(json.loads(data))
        except ValueError as e:
            log.warn("status history: ignoring {path}: {error}", path=str(self.path), error=str(e))

    def save(self, history: History) -> Deferred[None]:
        """Write C{history} as it is now, on the disk pool; a failure is logged."""
        written = self.disk.run(write_json, self.path, history.snapshot(), key=self.path)
        written.addErrback(
            lambda failure: log.warn(
                "status history: cannot write {path}: {error}",
                path=str(self.path),
                error=failure.value,
            )
        )
        return written


def write_json(path: Path, document: Any) -> None:
    """Replace C{path} with C{document} atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMPORARY, suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(document, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
