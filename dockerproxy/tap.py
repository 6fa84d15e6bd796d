"""Command-line options and L{makeService} (Twisted's C{tap} convention); the service
tree they make is L{dockerproxy.servicetree}'s.

C{twistd -n dockerproxy [options]} and C{proxy.tac} both end up in L{makeService}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from twisted.python import usage

from dockerproxy import __version__
from dockerproxy.certificates import is_tls, load_options, parse_tls
from dockerproxy.config import Config, ConfigError, build_config, load_toml
from dockerproxy.config.access import OPTIONS as ACCESS_OPTIONS
from dockerproxy.config.policy import OPTIONS as QUOTA_OPTIONS
from dockerproxy.listeners import describe
from dockerproxy.servicetree import DockerProxyService, service_for
from dockerproxy.workers.adoption import from_environment
from dockerproxy.workers.supervisor import Supervisor


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
        [
            "redis",
            None,
            None,
            "redis:// URL shared by a fleet of instances: tags, manifests, access records, "
            "fill locks.",
        ],
        [
            "workers",
            None,
            None,
            "Processes serving the listeners: a number or auto (one per core; default 1).",
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
        self["http2"] = None

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

    def opt_http2(self) -> None:
        """Offer HTTP/2 (h2, by ALPN) on ssl: listeners."""
        self["http2"] = True

    def opt_no_http2(self) -> None:
        """HTTP/1.1 only on ssl: listeners (the default)."""
        self["http2"] = False

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
        # The options as given, for the workers a supervisor starts (dockerproxy.workers).
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigError) as e:
            sys.stderr.write(f"dockerproxy: {e}\n")
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        self.config = self.reload_config()
        # A worker's listeners are sockets its supervisor opened (and checked).
        self.worker = from_environment()
        handed = set() if self.worker is None else {*self.worker.listen, *self.worker.admin}
        for endpoint in self.config.listen:
            if endpoint not in handed:
                check_endpoint(endpoint)
        for endpoint in self.config.admin.listen:
            if endpoint not in handed:
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
            "http2": self["http2"],
            "redis": self["redis"],
            "workers": self["workers"],
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


def makeService(options: Mapping[str, Any] | Options) -> DockerProxyService | Supervisor:
    """The proxy; with C{workers} > 1, the supervisor that runs them (unless this
    process is one of the workers)."""
    from twisted.internet import reactor

    config: Config = options.config  # type: ignore[union-attr]
    load = options.reload_config  # type: ignore[union-attr]
    worker = options.worker  # type: ignore[union-attr]
    if worker is None and config.workers > 1:
        return Supervisor(config, reactor, options.argv, load)  # type: ignore[union-attr]
    try:
        return service_for(config, reactor, load=load, worker=worker)
    except ConfigError as e:
        sys.stderr.write(f"dockerproxy: {e}\n")
        raise SystemExit(2) from None


def config_from_environment(environ: Mapping[str, str] = os.environ) -> Config:
    """The config for C{proxy.tac}: C{DOCKERPROXY_CONFIG} names the TOML file, if any."""
    path = environ.get("DOCKERPROXY_CONFIG")
    return build_config(load_toml(path) if path else {}, {})
