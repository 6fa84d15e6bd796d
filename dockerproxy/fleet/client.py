"""Redis for the fleet: a synchronous client on a small thread pool, falling back fast.

redis-py is maintained and complete but blocking, and no maintained client speaks
Twisted: each call runs on a thread pool of its own (L{FLEET_THREADS} threads,
never the disk's), with short connect and reply timeouts. A failure (refused,
timed out, any Redis error) makes the call return C{None}, which every caller
takes as "go on alone"; the first one of an outage is logged, each is counted
(C{dockerproxy_fleet_fallbacks_total}), and for L{BACKOFF} seconds after it no
call waits for Redis at all, so a Redis that hangs costs each pull at most one
timeout. Calls waiting for a thread are bounded too (L{MAX_PENDING}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from dockerproxy.cache.diskio import Pool
from dockerproxy.meters import NO_METERS, Meters

log = Logger()
T = TypeVar("T")

# Threads for Redis calls; each holds at most one connection.
FLEET_THREADS = 4
# Seconds after a failure during which calls fall back at once, without asking Redis.
BACKOFF = 5.0
# Calls queued for a thread at most; past it, a call falls back at once.
MAX_PENDING = 64


def make_redis(url: str, timeout: float) -> Any:
    """A redis-py client for C{url}: C{timeout} bounds connecting and each reply, no retries
    (the caller falls back instead), one connection per thread."""
    import redis  # loads only for a proxy in a fleet

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        max_connections=FLEET_THREADS,
        health_check_interval=0,
    )


class FleetClient:
    """Calls on C{redis} run on C{pool}; keys start with C{prefix}."""

    def __init__(
        self,
        redis: Any,
        pool: Pool,
        clock: IReactorTime,
        prefix: str = "dockerproxy:",
        meters: Meters = NO_METERS,
        backoff: float = BACKOFF,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.clock = clock
        self.prefix = prefix
        self.meters = meters
        self.backoff = backoff
        self.max_pending = max_pending
        self.pending = 0
        self.down = False  # an outage was logged and has not ended
        self._quiet_until = 0.0

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def call(self, operation: str, f: Callable[[Any], T]) -> T | None:
        """C{f(redis)} on the pool, or C{None} when Redis cannot answer: the caller falls
        back to its local behaviour. C{operation} names the call in the log and metrics."""
        if self.clock.seconds() < self._quiet_until or self.pending >= self.max_pending:
            self.meters.fleet_fallback(operation)
            return None
        self.pending += 1
        try:
            result = await self.pool.run(f, self.redis)
        except Exception as e:
            self._failed(operation, e)
            return None
        finally:
            self.pending -= 1
        if self.down:
            self.down = False
            log.info("fleet: Redis answers again; sharing with the fleet resumes")
        return result

    def _failed(self, operation: str, error: Exception) -> None:
        self.meters.fleet_fallback(operation)
        self._quiet_until = self.clock.seconds() + self.backoff
        if not self.down:
            self.down = True
            log.warn(
                "fleet: Redis failed ({operation}: {error}); this instance goes on alone "
                "until it answers again",
                operation=operation,
                error=f"{type(error).__name__}: {error}",
            )


class FleetPoolService(service.Service):
    """Owns the fleet's thread pool and its Redis connections: started with the tree,
    stopped after everything that could still call Redis (the cache's last writes)."""

    name = "fleet"

    def __init__(self, redis: Any, threadpool: ThreadPool | None = None) -> None:
        self.redis = redis
        self.threadpool = threadpool or ThreadPool(
            minthreads=0, maxthreads=FLEET_THREADS, name="dockerproxy-fleet"
        )

    def startService(self) -> None:
        super().startService()
        self.threadpool.start()

    def stopService(self) -> None:
        super().stopService()
        self.threadpool.stop()
        self.redis.close()
