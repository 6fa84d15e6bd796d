"""The proxy's service tree: what L{service_for} wires from a L{Config} and in which order
it starts and stops (L{DockerProxyService}). L{dockerproxy.tap} gives it its options.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.logger import ILogObserver
from twisted.python.components import Componentized
from twisted.python.threadpool import ThreadPool

from dockerproxy import internals
from dockerproxy.admin.service import make_admin
from dockerproxy.cache.diskio import ThreadedPool
from dockerproxy.clientauth import ClientAuth
from dockerproxy.config import Config
from dockerproxy.drain import Drain
from dockerproxy.heap import HeapTrimmer
from dockerproxy.listeners import ConnectionLimit, Listeners, ListenFailed, raise_fd_limit
from dockerproxy.logs import LogFormat
from dockerproxy.meters import NO_METERS
from dockerproxy.proxytokens import SigningKeyService
from dockerproxy.reload import Reloads, RestartNeeded
from dockerproxy.services import CacheService, OrderedMultiService, S3Service, ThreadPoolService
from dockerproxy.warmservice import make_warm
from dockerproxy.wiring import (
    make_client_auth,
    make_fleet,
    make_mirror,
    make_proxy,
    make_s3,
    make_search,
    make_site,
)
from dockerproxy.workers.adoption import Lifeline, Ready, WorkerSockets

STATS_INTERVAL = 60.0


class DockerProxyService(OrderedMultiService):
    """The proxy's service tree; its children stop in turn, last started first
    (listeners, drain, S3, stats, cache, thread pool), then the upstream pool closes."""

    listeners: Listeners | None = None
    reloads: Reloads | None = None
    threadpool: ThreadPool | None = None  # for disk work; a ThreadPoolService owns it
    heap: HeapTrimmer | None = None
    client_auth: ClientAuth | None = None  # users, tokens, logins: apply(config) on reload

    def __init__(self, config: Config, reactor: Any, pool: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.pool = pool

    def setServiceParent(self, parent: Any) -> Any:
        """Give the application (twistd's) a log observer whose format a reload can switch.

        twistd asks the application for an L{ILogObserver} after building this
        service, so this is the one place a plugin can choose the log format.
        """
        if isinstance(parent, Componentized):
            observer = LogFormat(self.config.log_format)
            parent.setComponent(ILogObserver, observer)
            if self.reloads is not None:
                self.reloads.register(observer.apply)
        return super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """Listen (before twistd drops privileges); an endpoint that cannot be listened
        on stops the proxy with one line on stderr and exit status 2, like a bad option."""
        raise_fd_limit(self.config.limits.max_connections)
        try:
            super().privilegedStartService()
        except ListenFailed as e:
            # twistd has sent sys.stderr to the log by now: the line goes to the terminal.
            (sys.__stderr__ or sys.stderr).write(f"dockerproxy: {e}\n")
            raise SystemExit(2) from None

    def stopService(self) -> Any:
        d = super().stopService()
        pool, heap = self.pool, self.heap
        if pool is not None:
            d.addCallback(lambda _: pool.closeCachedConnections())
        if heap is not None:
            d.addCallback(lambda _: heap.stop())
        d.addCallback(lambda _: exit_cleanly(self.reactor))
        return d


def exit_cleanly(reactor: Any) -> None:
    """After a completed graceful stop on SIGTERM, let twistd exit with status 0
    (it would kill itself again with the signal, as if killed mid-work)."""
    internals.forget_exit_signal(reactor, signal.SIGTERM)


def service_for(
    config: Config,
    reactor: Any,
    threadpool: ThreadPool | None = None,
    load: Callable[[], Config] | None = None,
    worker: WorkerSockets | None = None,
    shared_cache: bool = False,
) -> DockerProxyService:
    """Wire the service tree; nothing here touches the disk or the network.

    C{reactor} is a whole reactor (its core, time, TCP, SSL and threads interfaces),
    which no single interface type says.

    Children in start order (they stop in reverse, each after the one before):
    the SIGHUP handler (it stays through the drain), the thread pool, the signing key,
    the cache, its stats timer, S3, (the admin side,) the drain, the listeners, the
    C{[[warm]]} refresh (it stops first, cancelling a run under way). The
    cache's disk work runs on C{threadpool} (by default a new one, of
    L{dockerproxy.services.DISK_THREADS} threads), which the tree starts and stops. A
    reload reads the configuration with C{load} (by default it keeps C{config}, and the
    certificates are read again). An admin listener beyond loopback admits the users
    of C{[auth] admins}.

    A C{worker} (L{dockerproxy.workers}) adopts the sockets its supervisor handed it
    instead of listening, serves the admin listeners only if it is worker 0 (the others
    count their requests for it), and stops when its supervisor is gone. A worker, and
    a tree with C{shared_cache} (C{dockerproxy warm --cache-dir} beside a running proxy),
    shares the cache directory with other processes: claims on fills, one size bound,
    the access records, and C{tmp/} left alone.
    """
    pool_service = ThreadPoolService(threadpool)
    admin = make_admin(config, reactor, ThreadedPool(reactor, pool_service.threadpool))
    serves_admin = worker is None or worker.index == 0  # the other workers only count
    if admin is not None and worker is not None:
        admin.adopted = dict(worker.admin)
    meters = admin.metrics if admin is not None else NO_METERS
    proxy, pool = make_proxy(config, reactor, meters=meters)
    s3 = make_s3(config, reactor, pool, meters=meters)
    top = DockerProxyService(config, reactor, pool)
    top.reloads = Reloads(reactor, load or (lambda: config))
    top.reloads.setServiceParent(top)
    if worker is not None:
        Lifeline(reactor, worker.lifeline, reactor.stop).setServiceParent(top)
    pool_service.setServiceParent(top)
    top.threadpool = pool_service.threadpool
    fleet = make_fleet(config, reactor, s3, meters)
    if fleet is not None:  # Redis calls end after the cache's last writes
        fleet.service.setServiceParent(top)
    bcrypt_pool = ThreadedPool(reactor, pool_service.threadpool)
    top.client_auth = client_auth = make_client_auth(config, proxy, reactor, bcrypt_pool)
    if client_auth.enabled:
        SigningKeyService(config.state_dir, client_auth.use_key).setServiceParent(top)
    mirror = make_mirror(
        config.cache,
        reactor,
        proxy,
        ThreadedPool(reactor, pool_service.threadpool),
        s3,
        fleet,
        shared=worker is not None or shared_cache,
    )
    if mirror is not None:
        CacheService(mirror).setServiceParent(top)
        # Counters for `python -m dockerproxy.cache stats`, which reads the directory.
        stats = TimerService(STATS_INTERVAL, mirror.save_stats)
        stats.clock = reactor
        stats.setName("stats")
        stats.setServiceParent(top)
    if s3 is not None:
        S3Service(s3).setServiceParent(top)
    top.heap = HeapTrimmer.for_this_process(reactor)
    gate = client_auth if client_auth.enabled else None
    search = make_search(config, proxy)
    site = make_site(proxy, reactor, config.limits, mirror, top.heap, config.access, gate, search)
    site.policy.apply(config)
    site.http2 = config.http2 and internals.H2_HOOKS
    listeners = Listeners(
        reactor, config.listen, site, adopted=worker.listen if worker is not None else None
    )
    site.connections = ConnectionLimit(
        config.limits.max_connections, listeners.pause, listeners.resume, reactor
    )
    drain = Drain(site.connections, reactor, config.drain_timeout)
    if admin is not None and serves_admin:  # its history and listeners (stop after the drain)
        admin.attach(top, site, proxy, mirror, drain, client_auth.check_admin)
        top.reloads.register(admin.listeners.apply)  # type: ignore[union-attr]
    elif admin is not None:
        admin.count(site)
    drain.setServiceParent(top)
    listeners.setServiceParent(top)
    top.listeners = listeners
    for reloader in (site.apply, listeners.apply, proxy.apply, drain.apply, client_auth.apply):
        top.reloads.register(reloader)
    top.reloads.register(RestartNeeded(config).apply)
    warm = make_warm(config, reactor, listeners, client_auth)
    warm.setServiceParent(top)  # after the listeners: it pulls through them
    top.reloads.register(warm.apply)
    if worker is not None:
        Ready(worker.ready).setServiceParent(top)  # last: all the rest has started
    return top
