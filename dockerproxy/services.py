"""The proxy's long-lived parts as services, started and stopped with the tree.

Building the tree (L{dockerproxy.servicetree.service_for}) only wires objects together:
nothing touches the disk or the network until C{startService}, where the cache
recovers what a crash left behind, the S3 bucket is checked and the thread pool
starts. C{stopService} undoes each, and L{OrderedMultiService} stops them one
after another, last started first, so the listeners stop and the connections
drain before the cache's fills, S3 and the thread pool go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

if TYPE_CHECKING:
    from dockerproxy.cache.s3 import S3BlobStore
    from dockerproxy.mirror import Mirror

log = Logger()

# Threads for blocking disk work taken off the reactor: few, the disk is one.
DISK_THREADS = 4


class OrderedMultiService(service.MultiService):
    """A MultiService whose children stop in turn, last added first, each once the
    one before it has finished stopping (a MultiService stops them all at once)."""

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {service}", service=child)


class ThreadPoolService(service.Service):
    """Owns a small thread pool for blocking disk work: started and stopped (its
    threads joined) with the tree, after everything that could still use it."""

    name = "threadpool"

    def __init__(self, threadpool: ThreadPool | None = None) -> None:
        if threadpool is None:
            threadpool = ThreadPool(minthreads=0, maxthreads=DISK_THREADS, name="dockerproxy-disk")
        self.threadpool = threadpool

    def startService(self) -> None:
        super().startService()
        self.threadpool.start()

    def stopService(self) -> None:
        super().stopService()
        self.threadpool.stop()


class CacheService(service.Service):
    """The mirror's disk state: recovered at start (C{tmp/} cleared, blobs scanned,
    access records read), and at stop the fills still running abandoned (their
    partial files deleted) and what is kept in memory written out.

    The stop fires once the disk pool has nothing left to do: commits under way
    have landed (their blobs are kept), then the access records and counters are
    on the disk. Only then may the thread pool stop.
    """

    name = "cache"

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def startService(self) -> None:
        super().startService()
        self.mirror.blobs.start()
        self.mirror.access.load()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.mirror.blobs.stop()
        await self.mirror.disk.idle()  # commits land: their evictions, links change
        self.mirror.access.flush()
        self.mirror.save_stats()
        await self.mirror.disk.idle()


class S3Service(service.Service):
    """Checks (or creates) the shared S3 bucket at start; a stop cancels the check."""

    name = "s3"
    _check: Deferred[Any] | None = None

    def __init__(self, s3: S3BlobStore) -> None:
        self.s3 = s3

    def startService(self) -> None:
        super().startService()
        self._check = self.s3.start()

    def stopService(self) -> None:
        super().stopService()
        if self._check is not None and not self._check.called:
            self._check.cancel()
        self._check = None
