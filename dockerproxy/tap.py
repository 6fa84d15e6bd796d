"""Command-line options and the service tree (Twisted's C{tap} convention).

C{twistd -n dockerproxy [options]} and C{proxy.tac} both end up in L{makeService}.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.application.internet import TimerService
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.python.threadpool import ThreadPool

from dockerproxy import __version__, internals
from dockerproxy.admin.service import make_admin
from dockerproxy.cache.diskio import ThreadedPool
from dockerproxy.certificates import is_tls, load_options, parse_tls
from dockerproxy.config import (
    Config,
    ConfigError,
    build_config,
    load_toml,
)
from dockerproxy.config.access import OPTIONS as ACCESS_OPTIONS
from dockerproxy.config.policy import OPTIONS as QUOTA_OPTIONS
from dockerproxy.drain import Drain
from dockerproxy.heap import HeapTrimmer
from dockerproxy.listeners import (
    ConnectionLimit,
    Listeners,
    ListenFailed,
    describe,
    raise_fd_limit,
)
from dockerproxy.logs import LogFormat
from dockerproxy.meters import NO_METERS
from dockerproxy.proxytokens import SigningKeyService
from dockerproxy.reload import Reloads, RestartNeeded
from dockerproxy.services import CacheService, OrderedMultiService, S3Service, ThreadPoolService
from dockerproxy.warmservice import make_warm
from dockerproxy.wiring import (
    make_client_auth,
    make_mirror,
    make_proxy,
    make_s3,
    make_search,
    make_site,
)

if TYPE_CHECKING:
    from dockerproxy.clientauth import ClientAuth


class Options(usage.Options):
    """dockerproxy's options; anything given here overrides the --config file."""

    synopsis = "[options]"
    longdesc = (
        "A Docker / OCI registry pull proxy. With no options it mirrors Docker Hub on tcp:5000."
    )

    optParameters: ClassVar[list[list[str | None]]] = [
        ["config", "c", None, "TOML configuration file."],
        ["upstream", "u", None, "Default upstream registry URL (for any Host no route names)."],
        ["upstream-ca", None, None, "Extra CA bundle (PEM) trusted for upstream TLS."],
        [
            "upstream-credentials",
            None,
            None,
            "TOML file with username and password: the "
            "proxy's account at the default upstream, used "
            "only for clients that send no credentials.",
        ],
        ["connect-timeout", None, None, "Seconds to wait for an upstream connection."],
        ["headers-timeout", None, None, "Seconds to wait for upstream response headers."],
        ["idle-timeout", None, None, "Seconds a response body may stall before it is aborted."],
        [
            "client-header-timeout",
            None,
            None,
            "Seconds a client has to send a whole request (default 30); then 408.",
        ],
        [
            "client-idle-timeout",
            None,
            None,
            "Seconds a keep-alive client connection may stay idle (default 60).",
        ],
        [
            "max-connections",
            None,
            None,
            "Most client connections open at once (default "
            "10000); more wait in the listen backlog.",
        ],
        [
            "drain-timeout",
            None,
            None,
            "Seconds a stopping proxy lets responses under way "
            "finish before it cuts them (default 30).",
        ],
        [
            "public-url",
            None,
            None,
            "scheme://host[:port] clients reach the proxy at, used in "
            "challenges and the home page instead of each request's "
            "Host.",
        ],
        ["log-format", None, None, "Log format: text or json (one JSON object a line)."],
        [
            "cache-dir",
            None,
            None,
            "Cache directory (default: systemd's CacheDirectory or ~/.cache/dockerproxy).",
        ],
        ["cache-max-size", None, None, "Cache size bound, e.g. 20GiB (default 20GiB)."],
        [
            "max-blob-size",
            None,
            None,
            "Largest blob the cache writes, e.g. 32GiB (the "
            "default); larger ones are relayed or cut off.",
        ],
        [
            "tag-ttl",
            None,
            None,
            "Seconds a cached tag is served before it is revalidated (default 300).",
        ],
        [
            "stale-max-age",
            None,
            None,
            "Seconds a cached tag may be served while the upstream fails (default 604800).",
        ],
        [
            "cache-s3-endpoint",
            None,
            None,
            "S3-compatible endpoint URL of a blob cache shared "
            "by several instances (AWS S3, MinIO, Ceph, ...).",
        ],
        ["cache-s3-bucket", None, None, "Bucket of the shared S3 cache (created if missing)."],
        ["cache-s3-prefix", None, None, "Key prefix in the bucket, e.g. dockerproxy/."],
        [
            "cache-s3-region",
            None,
            None,
            "Region to sign S3 requests for (default AWS_REGION or us-east-1).",
        ],
        ["auth-htpasswd", None, None, "htpasswd file (bcrypt): clients log in to the proxy."],
        ["auth-tokens", None, None, 'TOML file of static tokens (name = "token") to log in.'],
        ["state-dir", None, None, "Where the token signing key is kept (StateDirectory)."],
        ["rate-limit", None, None, "Requests per client, e.g. 10/s; more get 429 (default none)."],
        ["rate-burst", None, None, "Requests a client may make at once (default: 1 s of rate)."],
        [
            "bandwidth-limit",
            None,
            None,
            "Response bytes per client, e.g. 20MiB/s, over all its downloads (default none).",
        ],
        ["max-pulls", None, None, "Blob downloads per client at once; more get 429."],
        [
            "search-upstream",
            None,
            None,
            "The index docker search asks (default https://index.docker.io; none with "
            "--no-presets).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["routes"] = {}
        for name in ACCESS_OPTIONS:
            self[name] = []
        self["registries"] = {}
        self["anonymous_pull"] = []
        self["library_prefix"] = None
        self["presets"] = None
        self["cache_enabled"] = None
        self["cache_s3_redirect"] = None
        self["admin_listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on a Twisted server endpoint (repeatable), e.g. tcp:5000:interface=127.0.0.1"""
        self["listen"].append(endpoint)

    def opt_route(self, value: str) -> None:
        """HOST=URL: requests whose Host is HOST go to URL (repeatable)."""
        host, sep, url = value.partition("=")
        if not sep or not host or not url:
            raise usage.UsageError(f"--route: expected HOST=URL, got {value!r}")
        self["routes"][host] = url

    def opt_registry(self, value: str) -> None:
        """NAME=URL: define or override registry NAME (path prefix, ns) (repeatable)."""
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            raise usage.UsageError(f"--registry: expected NAME=URL, got {value!r}")
        self["registries"][name] = url

    def opt_allow_ip(self, cidr: str) -> None:
        """CIDR: serve only clients from these networks (repeatable; default: all)."""
        self["allow_ip"].append(cidr)

    def opt_trusted_proxy(self, cidr: str) -> None:
        """CIDR: peers whose X-Forwarded-For / Forwarded name the client (repeatable)."""
        self["trusted_proxies"].append(cidr)

    def opt_allow(self, pattern: str) -> None:
        """NAME/REPOSITORY glob: only these repositories are served (repeatable)."""
        self["allow"].append(pattern)

    def opt_deny(self, pattern: str) -> None:
        """NAME/REPOSITORY glob: these repositories are never served (repeatable)."""
        self["deny"].append(pattern)

    def opt_anonymous_pull(self, pattern: str) -> None:
        """NAME/REPOSITORY glob: pulled without logging in when users are set (repeatable)."""
        self["anonymous_pull"].append(pattern)

    def opt_admin_listen(self, endpoint: str) -> None:
        """Serve /metrics, /healthz, /readyz and /status on this endpoint (repeatable)."""
        self["admin_listen"].append(endpoint)

    def opt_no_cache(self) -> None:
        """Relay only: cache nothing."""
        self["cache_enabled"] = False

    def opt_cache_s3_redirect(self) -> None:
        """Answer S3 cache hits with a 307 to a presigned URL instead of relaying the blob."""
        self["cache_s3_redirect"] = True

    def opt_no_presets(self) -> None:
        """Only the registries configured here; no built-in docker.io, ghcr.io, quay.io, ..."""
        self["presets"] = False

    def opt_library_prefix(self) -> None:
        """Complete one-component names to library/NAME on the default upstream."""
        self["library_prefix"] = True

    def opt_no_library_prefix(self) -> None:
        """Never complete one-component names to library/NAME on the default upstream."""
        self["library_prefix"] = False

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"dockerproxy {__version__}")
        sys.exit(0)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Report any bad option or setting as one line on stderr, exit status 2."""
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigError) as e:
            sys.stderr.write(f"dockerproxy: {e}\n")
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        self.config = self.reload_config()
        for endpoint in self.config.listen:
            check_endpoint(endpoint)
        for endpoint in self.config.admin.listen:
            check_endpoint(endpoint, "--admin-listen")

    def reload_config(self) -> Config:
        """The --config file (read now) merged with the command line, which wins."""
        toml = load_toml(self["config"]) if self["config"] else {}
        return build_config(toml, self.cli_settings())

    def cli_settings(self) -> dict[str, Any]:
        timeouts = {
            name: self[f"{name}-timeout"]
            for name in ("connect", "headers", "idle")
            if self[f"{name}-timeout"] is not None
        }
        return {
            "listen": self["listen"],
            "upstream": self["upstream"],
            "routes": self["routes"],
            "registries": self["registries"],
            "presets": self["presets"],
            "upstream_ca": self["upstream-ca"],
            "upstream_credentials": self["upstream-credentials"],
            "library_prefix": self["library_prefix"],
            "timeouts": timeouts,
            "log_format": self["log-format"],
            "cache_enabled": self["cache_enabled"],
            "cache_dir": self["cache-dir"],
            "cache_max_size": self["cache-max-size"],
            "max_blob_size": self["max-blob-size"],
            "tag_ttl": self["tag-ttl"],
            "stale_max_age": self["stale-max-age"],
            "cache_s3_endpoint": self["cache-s3-endpoint"],
            "cache_s3_bucket": self["cache-s3-bucket"],
            "cache_s3_prefix": self["cache-s3-prefix"],
            "cache_s3_region": self["cache-s3-region"],
            "cache_s3_redirect": self["cache_s3_redirect"],
            "client_header_timeout": self["client-header-timeout"],
            "client_idle_timeout": self["client-idle-timeout"],
            "max_connections": self["max-connections"],
            "drain_timeout": self["drain-timeout"],
            "public_url": self["public-url"],
            **{name: self[name] for name in ACCESS_OPTIONS},
            "auth_htpasswd": self["auth-htpasswd"],
            "auth_tokens": self["auth-tokens"],
            "anonymous_pull": self["anonymous_pull"],
            "state_dir": self["state-dir"],
            **{name: self[option[2:]] for name, option in QUOTA_OPTIONS.items()},
            "admin_listen": self["admin_listen"],
            "search_upstream": self["search-upstream"],
        }


def check_endpoint(description: str, key: str = "--listen") -> None:
    """Parse an endpoint string now, so a typo is a config error and not a failed start."""
    from twisted.internet import endpoints, reactor

    try:
        if is_tls(description):
            load_options(parse_tls(description))
        else:
            endpoints.serverFromString(reactor, description)
    except Exception as e:
        raise ConfigError(key, f"bad endpoint {description!r}: {describe(e)}") from None


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


def makeService(options: Mapping[str, Any] | Options) -> DockerProxyService:
    from twisted.internet import reactor

    config: Config = options.config  # type: ignore[union-attr]
    try:
        return service_for(config, reactor, load=options.reload_config)  # type: ignore[union-attr]
    except ConfigError as e:
        sys.stderr.write(f"dockerproxy: {e}\n")
        raise SystemExit(2) from None


def service_for(
    config: Config,
    reactor: Any,
    threadpool: ThreadPool | None = None,
    load: Callable[[], Config] | None = None,
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
    """
    pool_service = ThreadPoolService(threadpool)
    admin = make_admin(config, reactor, ThreadedPool(reactor, pool_service.threadpool))
    meters = admin.metrics if admin is not None else NO_METERS
    proxy, pool = make_proxy(config, reactor, meters=meters)
    s3 = make_s3(config, reactor, pool, meters=meters)
    top = DockerProxyService(config, reactor, pool)
    top.reloads = Reloads(reactor, load or (lambda: config))
    top.reloads.setServiceParent(top)
    pool_service.setServiceParent(top)
    top.threadpool = pool_service.threadpool
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
    listeners = Listeners(reactor, config.listen, site)
    site.connections = ConnectionLimit(
        config.limits.max_connections, listeners.pause, listeners.resume, reactor
    )
    drain = Drain(site.connections, reactor, config.drain_timeout)
    if admin is not None:  # its history and listeners (they stop after the drain)
        admin.attach(top, site, proxy, mirror, drain, client_auth.check_admin)
        top.reloads.register(admin.listeners.apply)  # type: ignore[union-attr]
    drain.setServiceParent(top)
    listeners.setServiceParent(top)
    top.listeners = listeners
    for reloader in (site.apply, listeners.apply, proxy.apply, drain.apply, client_auth.apply):
        top.reloads.register(reloader)
    top.reloads.register(RestartNeeded(config).apply)
    warm = make_warm(config, reactor, listeners, client_auth)
    warm.setServiceParent(top)  # after the listeners: it pulls through them
    top.reloads.register(warm.apply)
    return top


def config_from_environment(environ: Mapping[str, str] = os.environ) -> Config:
    """The config for C{proxy.tac}: C{DOCKERPROXY_CONFIG} names the TOML file, if any."""
    path = environ.get("DOCKERPROXY_CONFIG")
    return build_config(load_toml(path) if path else {}, {})
