"""Give memory back to the system after responses end.

glibc's malloc keeps what a process frees: body buffers of up to 1 MiB come
from its heap, and once small long-lived objects sit above them the heap cannot
shrink, so the process stays at its peak after the clients that caused it have
gone (tests/integration/test_relay_memory.py). C{malloc_trim(0)} hands every
free page back (madvise), wherever it lies in the heap.

A connection cut short can also leave its unsent bytes in a reference cycle:
under TLS, Twisted's TLS wrapper and the HTTP channel keep the closed TCP
transport, and its buffer, alive until a full garbage collection, which Python
starts only after many more allocations (100 stalled TLS clients gone: RSS 150
MiB, 61 MiB after a collection). After an aborted response the trim is preceded
by C{gc.collect()}.

Both walk memory (a collection took 20-30 ms with 67,000 objects), and the next
allocations fault pages in again, so they run at most once per L{TRIM_DELAY},
that long after a response ended. Without glibc (musl, macOS) there is no trim.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# Seconds from the end of a response to the trim: the buffers of connections
# closing at the same time are freed by then, and a busy proxy trims at most
# once per this long.
TRIM_DELAY = 2.0


def malloc_trim(library: object) -> Callable[[], object] | None:
    """C{malloc_trim(0)} from a loaded C library, if it has one (glibc does)."""
    trim = getattr(library, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Collects and trims once, L{TRIM_DELAY} after the first of a burst of response ends."""

    def __init__(
        self,
        clock: IReactorTime,
        trim: Callable[[], object] | None = None,
        delay: float = TRIM_DELAY,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        self.clock = clock
        self.delay = delay
        self._trim = trim
        self._collect = collect
        self._collect_due = False
        self._pending: IDelayedCall | None = None

    @classmethod
    def for_this_process(cls, clock: IReactorTime) -> HeapTrimmer:
        """A trimmer of this process's heap: the symbols it was linked with (its libc)."""
        try:
            library: object = ctypes.CDLL(None)
        except OSError:
            library = None
        return cls(clock, malloc_trim(library))

    def response_ended(self, aborted: bool = False) -> None:
        """Memory may have been freed (or, if C{aborted}, left in garbage cycles)."""
        self._collect_due = self._collect_due or aborted
        if self._pending is None and (self._trim is not None or self._collect_due):
            self._pending = self.clock.callLater(self.delay, self._run)

    def stop(self) -> None:
        """No trim after the proxy stopped (its process is about to exit anyway)."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def _run(self) -> None:
        self._pending = None
        if self._collect_due:
            self._collect_due = False
            self._collect()
        if self._trim is not None:
            self._trim()
