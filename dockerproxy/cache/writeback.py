"""A partial file's writeback, started while the fill still writes it, so that the
fsync of its commit has little left to do.

A commit fsyncs the whole blob before its last byte goes to the clients
(L{dockerproxy.cache.store.FilesystemStore.commit}). Left alone, the kernel
writes dirty pages back after about 30 s or under memory pressure, so for a fast
fill that fsync writes nearly all of the blob while every client waits: 0.37 s
of the 1.2 s it took to write and hash 1 GiB here. C{sync_file_range} with
C{SYNC_FILE_RANGE_WRITE} starts the writeback of what is written so far and
returns without waiting, so the disk works while the fill goes on: the same
1 GiB took 0.94 s, its final fsync included. It promises nothing about
durability (the commit's fsync still does). Python has no binding for it, hence
C{ctypes}; where the C library has none (not Linux) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

# How much is written between two writeback starts: small enough that the disk
# starts early, large enough that the calls cost nothing next to the writes.
STEP = 8 * 1024 * 1024
SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_sync_file_range = _load()


class Writeback:
    """Starts the writeback of a file written in order, every L{STEP} bytes."""

    def __init__(self) -> None:
        self.started = 0  # the bytes whose writeback was started
        self.enabled = _sync_file_range is not None

    def wrote(self, fd: int, size: int) -> None:
        """The file now has C{size} bytes: start writing back the new ones, a step at a time.

        A failure (a file system without support) only turns it off: the commit's
        fsync writes everything anyway.
        """
        if not self.enabled or size - self.started < STEP:
            return
        assert _sync_file_range is not None
        if _sync_file_range(fd, self.started, size - self.started, SYNC_FILE_RANGE_WRITE) != 0:
            self.enabled = False
        self.started = size
