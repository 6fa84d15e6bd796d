"""A graceful stop: client connections finish what they are sending, for a while.

On SIGTERM (twistd stops the reactor, which stops the service tree) the
listeners stop first, so nothing new is accepted; then L{Drain} lets the open
client connections finish the response under way and closes each one after it.
Connections waiting for a request close at once. When the last connection is
gone the stop goes on at once; after C{timeout} seconds what is left is
aborted: a cut connection, never a complete-looking body. Only then are cache
fills stopped (their partial files deleted) and the rest of the tree stopped.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from dockerproxy.config import Config
from dockerproxy.listeners import ConnectionLimit

log = Logger()

# Seconds a connection accepted just before the listeners stopped has to send its
# first bytes, which may still be unread in its socket, before it counts as idle.
FRESH_GRACE = 2.0
# Seconds to wait for aborted connections to be gone (they go at the reactor's next turn).
ABORT_WAIT = 1.0


class Drain(service.Service):
    """Drains C{connections} on stop, for at most C{timeout} seconds (see the module)."""

    name = "drain"

    def __init__(self, connections: ConnectionLimit, clock: IReactorTime, timeout: float) -> None:
        self.connections = connections
        self.clock = clock
        self.timeout = timeout

    def apply(self, config: Config) -> None:
        """A reload: the drain timeout of the next stop."""
        self.timeout = config.drain_timeout

    def stopService(self) -> Deferred[None]:
        super().stopService()
        open_now = self.connections.open
        if open_now:
            log.info(
                "stopping: open client connections: {count}; responses under way may "
                "finish for up to {timeout:g} s",
                count=open_now,
                timeout=self.timeout,
            )
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        self._drain_each(close_fresh=False)
        fresh = self.clock.callLater(
            min(FRESH_GRACE, self.timeout), self._drain_each, close_fresh=True
        )
        try:
            finished = await self._all_closed(self.timeout)
        finally:
            if fresh.active():
                fresh.cancel()
        if finished:
            return
        left = list(self.connections.channels)
        log.warn(
            "stopping: client connections still open after {timeout:g} s "
            "(--drain-timeout): {count}, aborted",
            count=len(left),
            timeout=self.timeout,
        )
        for channel in left:
            channel.transport.abortConnection()
        await self._all_closed(ABORT_WAIT)

    def _drain_each(self, close_fresh: bool) -> None:
        for channel in list(self.connections.channels):
            channel.drain(close_fresh)

    async def _all_closed(self, timeout: float) -> bool:
        """Whether every connection closed within C{timeout} seconds."""
        closed: Deferred[Any] = self.connections.all_closed()
        closed.addTimeout(timeout, self.clock)
        try:
            await closed
        except DeferredTimeout:
            return False
        return True
