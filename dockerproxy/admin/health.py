"""Whether the proxy should get traffic: C{/readyz}'s checks.

Ready means: not draining (a stopping proxy finishes what it has and takes
nothing new, see L{dockerproxy.drain}), the cache directory writable (checked
on the disk pool: a hung disk must not stall the reactor), and an upstream
reached recently. An idle proxy has reached nothing lately, so then the check
asks one itself (a C{GET /v2/}, which costs no pull quota), at most once per
L{PROBE_INTERVAL}; any answer, even a 401, means the upstream is reachable.

Concurrent checks share the one disk check and the one probe in flight, so
however often C{/readyz} is asked, at most one of each runs at a time.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime

from dockerproxy.cache.diskio import Pool

# An upstream answer this recent (seconds) makes the proxy ready.
REACHED_WINDOW = 300.0
# Seconds between two probes of an upstream by the check itself.
PROBE_INTERVAL = 30.0
# Seconds the disk check may take before the cache counts as not writable.
DISK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Readiness:
    """The checks' outcome: each check's name and C{ok} or what is wrong."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


def cache_problem(directory: Path) -> str | None:
    """Why the cache cannot be written to (None: it can); blocking, for the disk pool."""
    try:
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{directory} is not writable"
        if os.statvfs(directory).f_bavail == 0:
            return f"no space left in {directory}"
    except OSError as e:
        return f"{directory}: {e.strerror or e}"
    return None


class Shared:
    """Runs C{work} once at a time: callers during a run get its outcome."""

    def __init__(self, work: Callable[[], Awaitable[Any]]) -> None:
        self.work = work
        self._waiting: list[Deferred[Any]] | None = None

    @property
    def running(self) -> bool:
        return self._waiting is not None

    def __call__(self) -> Deferred[Any]:
        waiter: Deferred[Any] = Deferred()
        if self._waiting is not None:
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]
        ensureDeferred(self._run())
        return waiter

    async def _run(self) -> None:
        try:
            outcome: Any = await self.work()
        except Exception as e:
            outcome = e
        waiting, self._waiting = self._waiting or [], None
        for waiter in waiting:
            if isinstance(outcome, Exception):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)


class ReadinessCheck:
    """The checks of C{/readyz} (see the module).

    C{draining} says whether the proxy is stopping; C{reached_at} when an upstream
    last answered (clock seconds, None: never); C{probe} asks one and returns
    whether it answered; C{cache_dir} (None: no cache) is checked on C{pool}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        draining: Callable[[], bool],
        reached_at: Callable[[], float | None],
        probe: Callable[[], Awaitable[bool]] | None,
        cache_dir: Path | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.clock = clock
        self.draining = draining
        self.reached_at = reached_at
        self.cache_dir = cache_dir
        self.pool = pool
        self._probe = Shared(probe) if probe is not None else None
        self._probed_at: float | None = None
        self._disk = Shared(self._check_disk)

    async def check(self) -> Readiness:
        """The outcome; a proxy that drains is not ready whatever else holds, so then
        nothing else is checked (nor any upstream asked)."""
        if self.draining():
            return Readiness({"draining": "stopping: draining connections"})
        checks = {"draining": "ok"}
        checks["cache"] = await self._disk() if self.cache_dir is not None else "ok"
        checks["upstream"] = await self._upstream()
        return Readiness(checks)

    async def _check_disk(self) -> str:
        assert self.cache_dir is not None and self.pool is not None
        d = self.pool.run(cache_problem, self.cache_dir)
        d.addTimeout(DISK_TIMEOUT, self.clock)
        try:
            problem = await d
        except DeferredTimeout:
            return f"the cache's disk did not answer within {DISK_TIMEOUT:g} seconds"
        return problem or "ok"

    def _recent(self) -> bool:
        reached = self.reached_at()
        return reached is not None and self.clock.seconds() - reached <= REACHED_WINDOW

    async def _upstream(self) -> str:
        if self._recent():
            return "ok"
        now = self.clock.seconds()
        probe = self._probe
        if probe is not None and (
            probe.running or self._probed_at is None or now - self._probed_at >= PROBE_INTERVAL
        ):
            if not probe.running:
                self._probed_at = now
            await probe()
        if self._recent():
            return "ok"
        return f"no upstream answered in the last {REACHED_WINDOW:g} seconds"
