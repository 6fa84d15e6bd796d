"""Merging the TOML file and the command line into one checked L{Config}."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from dockerproxy.config.access import access_config
from dockerproxy.config.admin import admin_config
from dockerproxy.config.auth import auth_config, state_dir_config
from dockerproxy.config.cache import cache_config
from dockerproxy.config.checks import (
    ConfigError,
    check_count,
    check_file,
    check_host,
    check_seconds,
    check_table,
    check_url,
)
from dockerproxy.config.fleet import fleet_config
from dockerproxy.config.policy import KEYS as QUOTA_KEYS
from dockerproxy.config.policy import quotas_config
from dockerproxy.config.protocols import http2_config
from dockerproxy.config.search import search_config
from dockerproxy.config.settings import DEFAULT_LISTEN, LOG_FORMATS, ClientLimits, Config, Timeouts
from dockerproxy.config.upstreams import (
    credentials_file,
    default_upstream,
    registries_config,
    route_target,
    routes_config,
    timeouts_config,
    timeouts_from_options,
)
from dockerproxy.config.warm import warm_config
from dockerproxy.config.workers import workers_config

_TOP_KEYS = {
    "listen",
    "upstream",
    "upstream_ca",
    "library_prefix",
    "routes",
    "timeouts",
    "log_format",
    "presets",
    "registries",
    "cache",
    "limits",
    "public_url",
    "drain_timeout",
    "access",
    "auth",
    "state_dir",
    "users",
    "admin",
    "search",
    "warm",
    "http2",
    "fleet",
    "workers",
}


def _listen(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, 'must be a list of endpoint strings such as "tcp:5000"')
    return tuple(value)


def build_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> Config:
    """Merge TOML settings with command-line ones (which win) into a checked L{Config}.

    C{cli} holds only what was given on the command line: C{listen}, C{upstream},
    C{routes} (HOST -> URL or registry name), C{registries} (NAME -> URL),
    C{presets} (False to drop them), C{upstream_ca}, C{library_prefix},
    C{timeouts} (name -> value), C{log_format}, and for the cache C{cache_enabled}
    (False for --no-cache), C{cache_dir}, C{cache_max_size}, C{tag_ttl},
    C{stale_max_age}, C{cache_s3_endpoint}, C{cache_s3_bucket}, C{cache_s3_prefix},
    C{cache_s3_region} and C{cache_s3_redirect} (True for --cache-s3-redirect), and for
    clients C{client_header_timeout}, C{client_idle_timeout}, C{max_connections} and
    C{public_url}, and C{drain_timeout}, and C{search_upstream} (C{docker search}),
    and C{http2} (True or False for --http2 / --no-http2), C{redis} (the fleet's) and
    C{workers} (a count or C{auto}).
    """
    unknown = set(toml) - _TOP_KEYS
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown setting")

    listen: tuple[str, ...] = DEFAULT_LISTEN
    if "listen" in toml:
        listen = _listen("listen", toml["listen"])
    if cli.get("listen"):
        listen = _listen("--listen", list(cli["listen"]))

    timeouts = timeouts_config(toml.get("timeouts", {}), Timeouts())
    timeouts = timeouts_from_options(cli.get("timeouts", {}), timeouts)

    registries = registries_config(toml, cli, timeouts)
    routes = routes_config(toml.get("routes", {}), registries, timeouts)
    for raw_host, value in cli.get("routes", {}).items():
        key = f"--route {raw_host}"
        host = check_host(key, raw_host)
        routes[host] = route_target(key, host, value, registries, timeouts)

    upstream_ca = toml.get("upstream_ca")
    if upstream_ca is not None:
        upstream_ca = check_file("upstream_ca", upstream_ca)
    if cli.get("upstream_ca") is not None:
        upstream_ca = check_file("--upstream-ca", cli["upstream_ca"])

    explicit_hub = "docker.io" in cli.get("registries", {}) or "docker.io" in (
        toml.get("registries") or {}
    )
    default = default_upstream(
        toml, cli, registries, has_routes=bool(routes), explicit_hub=explicit_hub
    )
    if cli.get("upstream_credentials") is not None:
        if default is None:
            raise ConfigError("--upstream-credentials", "there is no default upstream")
        default = replace(
            default,
            credentials=credentials_file("--upstream-credentials", cli["upstream_credentials"]),
        )
        if default.name in registries and registries[default.name].url == default.url:
            registries[default.name] = default

    log_format = cli.get("log_format") or toml.get("log_format", "text")
    if log_format not in LOG_FORMATS:
        key = "--log-format" if cli.get("log_format") else "log_format"
        raise ConfigError(key, f"must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")

    public_url = None
    if cli.get("public_url") is not None:
        public_url = check_url("--public-url", cli["public_url"])
    elif "public_url" in toml:
        public_url = check_url("public_url", toml["public_url"])

    config = Config(
        listen=listen,
        default=default,
        routes=routes,
        registries=registries,
        upstream_ca=upstream_ca,
        timeouts=timeouts,
        log_format=log_format,
        cache=cache_config(toml, cli),
        limits=_limits(toml.get("limits", {}), cli),
        public_url=public_url,
        drain_timeout=_drain_timeout(toml, cli),
        access=access_config(toml.get("access", {}), cli),
        auth=auth_config(toml.get("auth", {}), cli),
        state_dir=state_dir_config(toml, cli),
        quotas=quotas_config(toml, cli),
        admin=admin_config(toml.get("admin", {}), cli),
        search=search_config(toml, cli),
        warm=warm_config(toml.get("warm")),
        http2=http2_config(toml, cli),
        fleet=fleet_config(toml, cli),
        workers=workers_config(toml, cli),
    )
    _check_admins(config, cli)
    if config.fleet.redis is not None and config.cache.directory is None:
        key = "--redis" if cli.get("redis") else "fleet.redis"
        raise ConfigError(key, "a fleet shares the cache: it needs the local cache (no --no-cache)")
    return config


def _check_admins(config: Config, cli: Mapping[str, Any]) -> None:
    """An admin listener beyond loopback shows the proxy's numbers to admins only, so
    it needs some: the proxy does not start rather than show them to anyone."""
    if config.admin.public and not config.auth.admins:
        key = "--admin-listen" if cli.get("admin_listen") else "admin.listen"
        raise ConfigError(
            key,
            f"{config.admin.public[0]!r} listens beyond loopback: it needs admins "
            "([auth] admins), or an interface such as interface=127.0.0.1",
        )


def _drain_timeout(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> float:
    if cli.get("drain_timeout") is not None:
        return check_seconds("--drain-timeout", cli["drain_timeout"], maximum=3600)
    if "drain_timeout" in toml:
        return check_seconds("drain_timeout", toml["drain_timeout"], maximum=3600)
    return Config.drain_timeout


def _limits(table: Any, cli: Mapping[str, Any]) -> ClientLimits:
    """C{[limits]} and C{--client-header-timeout}, C{--client-idle-timeout},
    C{--max-connections}; the key names are the options' without dashes."""
    table = check_table("limits", table, set(ClientLimits.__dataclass_fields__) | QUOTA_KEYS)
    values: dict[str, Any] = {}
    for name in ClientLimits.__dataclass_fields__:
        option = f"--{name.replace('_', '-')}"
        key, value = (
            (option, cli[name])
            if cli.get(name) is not None
            else (f"limits.{name}", table.get(name))
        )
        if value is None:
            continue
        if name == "max_connections":
            values[name] = check_count(key, value, maximum=1_000_000)
        else:
            values[name] = check_seconds(key, value)
    return ClientLimits(**values)
