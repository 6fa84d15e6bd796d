"""Building the admin side from the settings: the metrics, the history and its
service, the readiness checks, and the admin listeners with their own Site.

Nothing of it exists without C{--admin-listen}: then no metric is counted and
no history kept. L{make_admin} only builds; L{Admin.services} are put in the
tree by L{dockerproxy.servicetree.service_for}, which starts and stops them.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.http_headers import Headers

from dockerproxy import __version__, errors
from dockerproxy.accesslog import access_logger
from dockerproxy.admin.collectors import StateCollector
from dockerproxy.admin.gate import CheckAdmin
from dockerproxy.admin.health import ReadinessCheck
from dockerproxy.admin.history import History
from dockerproxy.admin.historyfile import FILENAME, HistoryFile
from dockerproxy.admin.metrics import MULTIPROCESS, Metrics
from dockerproxy.admin.pages import AdminRoot, AdminSite
from dockerproxy.admin.status import StatusSources
from dockerproxy.cache.diskio import DiskWork, Pool
from dockerproxy.config import Config
from dockerproxy.config.admin import OPTION
from dockerproxy.drain import Drain
from dockerproxy.exchange import Proxy
from dockerproxy.listeners import ConnectionLimit, Listeners
from dockerproxy.mirror import Mirror
from dockerproxy.relay import discard
from dockerproxy.site import ProxySite

# Admin connections open at once (Prometheus, a browser, a load balancer's checks).
MAX_ADMIN_CONNECTIONS = 64
# Seconds after a minute's end the history takes it (the minute is whole by then).
SETTLE = 0.5
USER_AGENT = f"dockerproxy/{__version__} (readiness check)".encode()


class HistoryService(service.Service):
    """Records the metrics' tally in the history at the end of every minute, and keeps
    it on disk: loaded at start, written each minute and at stop (the stop waits)."""

    name = "history"
    _call: IDelayedCall | None = None

    def __init__(
        self, clock: IReactorTime, history: History, metrics: Metrics, file: HistoryFile | None
    ) -> None:
        self.clock = clock
        self.history = history
        self.metrics = metrics
        self.file = file

    def startService(self) -> None:
        super().startService()
        if self.file is not None:
            self.file.load(self.history)
        self._schedule()

    def _schedule(self) -> None:
        now = self.clock.seconds()
        self._call = self.clock.callLater(60 - now % 60 + SETTLE, self._minute_ended)

    def _minute_ended(self) -> None:
        self._call = None
        self.history.record(self.metrics.tally.take(), int(self.clock.seconds() // 60) - 1)
        if self.file is not None:
            self.file.save(self.history)
        self._schedule()

    def stopService(self) -> Any:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.history.record(self.metrics.tally.take(), int(self.clock.seconds() // 60))
        return self.file.save(self.history) if self.file is not None else None


def upstream_probe(proxy: Proxy) -> Callable[[], Awaitable[bool]] | None:
    """A C{GET /v2/} of the default upstream (else the first route's or registry's):
    whether it answered at all; None when there is no upstream."""
    router = proxy.router
    candidates = [router.default, *router.routes.values(), *router.registries.values()]
    upstream = next((u for u in candidates if u is not None), None)
    if upstream is None:
        return None

    async def probe() -> bool:
        client = proxy.client(upstream)
        url = f"{upstream.url}/v2/"
        try:
            fetched = await client.fetch(b"GET", url, Headers({b"user-agent": [USER_AGENT]}))
        except errors.RegistryError:
            return False
        await discard(fetched.response)
        return True

    return probe


class Admin:
    """The admin side's parts, for C{config}; see L{wire} for what joins them."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        pool: Pool,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.pool = pool
        self.check_admin: CheckAdmin | None = None
        self.metrics = Metrics(reactor, multiprocess=os.environ.get(MULTIPROCESS))
        self.state = StateCollector()
        self.metrics.add_collector(self.state)
        self.history = History()
        directory = config.cache.directory
        self.directory = Path(directory) if directory is not None else None
        file = (
            None
            if self.directory is None
            else HistoryFile(self.directory / FILENAME, DiskWork(pool))
        )
        self.history_service = HistoryService(reactor, self.history, self.metrics, file)
        self.listeners: Listeners | None = None
        # description -> (fd, family): sockets a supervisor handed this worker.
        self.adopted: dict[str, tuple[int, int]] = {}

    def attach(
        self,
        top: service.MultiService,
        site: ProxySite,
        proxy: Proxy,
        mirror: Mirror | None,
        drain: Drain,
        check_admin: CheckAdmin | None = None,
    ) -> None:
        """Count C{site}'s requests, and add the history and the admin listeners to
        C{top} (before C{drain}: they stop after it, so C{/readyz} says it drains).
        C{check_admin} admits the admins to the listeners beyond loopback."""
        if self.config.admin.public:
            self.check_admin = check_admin
        site.access_log = access_logger(self.metrics.observe)
        self.state.connections = site.connections
        self.history_service.setServiceParent(top)
        self.wire(proxy, mirror, lambda: not drain.running).setServiceParent(top)

    def count(self, site: ProxySite) -> None:
        """Count C{site}'s requests only: a worker other than 0, whose counts worker 0's
        admin listener exposes (L{dockerproxy.admin.metrics})."""
        site.access_log = access_logger(self.metrics.observe)

    def wire(self, proxy: Proxy, mirror: Mirror | None, draining: Callable[[], bool]) -> Listeners:
        """The admin listeners, serving what C{proxy} and C{mirror} do (not started)."""
        blobs = mirror.blobs if mirror is not None else None
        self.state.blobs = blobs
        readiness = ReadinessCheck(
            self.reactor,
            draining,
            lambda: self.metrics.reached_at,
            upstream_probe(proxy),
            self.directory if mirror is not None else None,
            self.pool,
        )
        sources = StatusSources(self.reactor, self.history, self.metrics, blobs)
        root = AdminRoot(self.metrics, readiness, sources, self.check_admin)
        site = AdminSite(root, self.reactor)
        listeners = Listeners(
            self.reactor, self.config.admin.listen, site, option=OPTION, adopted=self.adopted
        )
        listeners.setName("admin")
        site.connections = ConnectionLimit(
            MAX_ADMIN_CONNECTIONS, listeners.pause, listeners.resume, self.reactor
        )
        self.listeners = listeners
        return listeners


def make_admin(config: Config, reactor: Any, pool: Pool) -> Admin | None:
    """The admin side, if C{--admin-listen} asks for one (beyond loopback only with
    C{[auth] admins}: L{dockerproxy.config.build} refuses anything else)."""
    if not config.admin.listen:
        return None
    return Admin(config, reactor, pool)
