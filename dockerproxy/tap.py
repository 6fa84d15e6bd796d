"""Command-line options and the service tree (Twisted's C{tap} convention).

C{twistd -n dockerproxy [options]} and C{proxy.tac} both end up in L{makeService}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from twisted.application import service, strports
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import ILogObserver, jsonFileLogObserver
from twisted.python import usage
from twisted.python.components import Componentized

from dockerproxy import __version__
from dockerproxy.challenges import ChallengeCache
from dockerproxy.config import Config, ConfigError, UpstreamConfig, build_config, load_toml
from dockerproxy.exchange import Proxy
from dockerproxy.resources import RootResource
from dockerproxy.routing import Router
from dockerproxy.site import ProxySite
from dockerproxy.upstream import UpstreamClient, UpstreamClients, make_http_client, make_pool


class Options(usage.Options):
    """dockerproxy's options; anything given here overrides the --config file."""

    synopsis = "[options]"
    longdesc = ("A Docker / OCI registry pull proxy. With no options it mirrors Docker Hub "
                "on tcp:5000.")

    optParameters: ClassVar[list[list[str | None]]] = [
        ["config", "c", None, "TOML configuration file."],
        ["upstream", "u", None, "Default upstream registry URL (for any Host no route names)."],
        ["upstream-ca", None, None, "Extra CA bundle (PEM) trusted for upstream TLS."],
        ["connect-timeout", None, None, "Seconds to wait for an upstream connection."],
        ["headers-timeout", None, None, "Seconds to wait for upstream response headers."],
        ["idle-timeout", None, None, "Seconds a response body may stall before it is aborted."],
        ["log-format", None, None, "Log format: text or json (one JSON object a line)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["routes"] = {}
        self["registries"] = {}
        self["library_prefix"] = None
        self["presets"] = None

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
        toml = load_toml(self["config"]) if self["config"] else {}
        self.config = build_config(toml, self.cli_settings())
        for endpoint in self.config.listen:
            check_endpoint(endpoint)

    def cli_settings(self) -> dict[str, Any]:
        timeouts = {name: self[f"{name}-timeout"] for name in ("connect", "headers", "idle")
                    if self[f"{name}-timeout"] is not None}
        return {
            "listen": self["listen"],
            "upstream": self["upstream"],
            "routes": self["routes"],
            "registries": self["registries"],
            "presets": self["presets"],
            "upstream_ca": self["upstream-ca"],
            "library_prefix": self["library_prefix"],
            "timeouts": timeouts,
            "log_format": self["log-format"],
        }


def check_endpoint(description: str) -> None:
    """Parse an endpoint string now, so a typo is a config error and not a failed start."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:
        raise ConfigError("--listen", f"bad endpoint {description!r}: {e}") from None


class DockerProxyService(service.MultiService):
    """The listeners plus the upstream connection pool, closed on shutdown."""

    def __init__(self, config: Config, pool: Any) -> None:
        super().__init__()
        self.config = config
        self.pool = pool

    def setServiceParent(self, parent: Any) -> Any:
        """With C{log_format = "json"}, make twistd log JSON by giving the application an observer.

        twistd asks the application for an L{ILogObserver} after building this
        service, so this is the one place a plugin can choose the log format.
        """
        if self.config.log_format == "json" and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, json_observer())
        return super().setServiceParent(parent)

    def stopService(self) -> Any:
        d = super().stopService()
        d.addCallback(lambda _: self.pool.closeCachedConnections())
        return d


def json_observer(stream: Any = None) -> ILogObserver:
    return jsonFileLogObserver(stream or sys.stdout, recordSeparator="")


def make_proxy(config: Config, reactor: IReactorTime, http: Any = None) -> tuple[Proxy, Any]:
    """Wire routing, upstream clients and the challenge cache; inject C{http} in tests.

    Each upstream gets its own client (its timeouts, CA and TLS checks) over one
    shared connection pool, which the caller closes on shutdown.
    """
    pool = None if http is not None else make_pool(reactor)

    def client_for(upstream: UpstreamConfig) -> UpstreamClient:
        timeouts = upstream.timeouts or config.timeouts
        if http is not None:
            return UpstreamClient(http, reactor, timeouts)
        ca_files = [f for f in (config.upstream_ca, upstream.ca_file) if f]
        client = make_http_client(reactor, pool, timeouts, ca_files, upstream.insecure)
        return UpstreamClient(client, reactor, timeouts)

    clients = UpstreamClients(client_for)
    proxy = Proxy(Router.from_config(config), clients, ChallengeCache(clients, reactor),
                  reactor)
    return proxy, pool


def make_site(proxy: Proxy, reactor: IReactorTime) -> ProxySite:
    return ProxySite(RootResource(proxy), reactor)


def makeService(options: Mapping[str, Any] | Options) -> DockerProxyService:
    from twisted.internet import reactor

    config: Config = options.config  # type: ignore[union-attr]
    return service_for(config, reactor)


def service_for(config: Config, reactor: IReactorCore) -> DockerProxyService:
    proxy, pool = make_proxy(config, reactor)  # type: ignore[arg-type]
    top = DockerProxyService(config, pool)
    site = make_site(proxy, reactor)  # type: ignore[arg-type]
    for description in config.listen:
        strports.service(description, site).setServiceParent(top)
    return top


def config_from_environment(environ: Mapping[str, str] = os.environ) -> Config:
    """The config for C{proxy.tac}: C{DOCKERPROXY_CONFIG} names the TOML file, if any."""
    path = environ.get("DOCKERPROXY_CONFIG")
    return build_config(load_toml(path) if path else {}, {})
