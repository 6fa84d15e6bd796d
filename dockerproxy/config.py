"""Typed settings, read from TOML and command-line options, validated in one place.

Every problem is reported as a L{ConfigError} naming the offending key, so an
operator sees one clear line instead of a traceback.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

DOCKER_HUB_URL = "https://registry-1.docker.io"
DOCKER_HUB_HOSTS = frozenset(
    {"registry-1.docker.io", "docker.io", "index.docker.io", "registry.hub.docker.com"}
)
DEFAULT_LISTEN = ("tcp:5000",)
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A bad setting: C{key} names it the way the operator wrote it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a TCP/TLS connection, for response headers, and between body bytes."""

    connect: float = 10.0
    headers: float = 60.0
    idle: float = 60.0


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream registry."""

    name: str
    url: str
    library_prefix: bool
    ca_file: str | None = None

    @property
    def is_docker_hub(self) -> bool:
        return urlsplit(self.url).hostname in DOCKER_HUB_HOSTS


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    default: UpstreamConfig | None = None
    routes: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    upstream_ca: str | None = None
    timeouts: Timeouts = Timeouts()
    log_format: str = "text"


def check_url(key: str, value: Any) -> str:
    """An upstream base URL: http(s), a host, no path, query or credentials."""
    if not isinstance(value, str):
        raise ConfigError(key, "must be a URL string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be an http:// or https:// URL, got {value!r}")
    if parts.username or parts.password:
        raise ConfigError(key, "must not carry credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(key, f"must have no path, query or fragment, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(key, f"has an invalid port: {value!r}") from None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def check_host(key: str, value: str) -> str:
    host = value.strip().lower()
    if not host or any(c in host for c in "/?#@ ") or not host.isascii():
        raise ConfigError(key, f"must be a host name (with an optional :port), got {value!r}")
    return host


def check_file(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a file path")
    if not os.path.isfile(value):
        raise ConfigError(key, f"no such file: {value}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def check_seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(key, f"must be a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 86400:
        raise ConfigError(key, f"must be between 0 and 86400 seconds, got {value!r}")
    return seconds


def make_upstream(key: str, url: Any, library_prefix: Any = None,
                  ca_file: Any = None, name: str | None = None) -> UpstreamConfig:
    """Validate one upstream; C{library_prefix} None means Docker Hub's rule for Docker Hub."""
    checked = check_url(f"{key}.url" if name else key, url)
    upstream = UpstreamConfig(name=name or urlsplit(checked).netloc, url=checked,
                              library_prefix=False)
    if library_prefix is None:
        prefix = upstream.is_docker_hub
    else:
        prefix = check_bool(f"{key}.library_prefix", library_prefix)
    ca = None if ca_file is None else check_file(f"{key}.ca_file", ca_file)
    return replace(upstream, library_prefix=prefix, ca_file=ca)


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config", f"{path} is not valid TOML: {e}") from None


_TOP_KEYS = {"listen", "upstream", "upstream_ca", "library_prefix", "routes", "timeouts",
             "log_format"}


def _routes(table: Any) -> dict[str, UpstreamConfig]:
    if not isinstance(table, dict):
        raise ConfigError("routes", "must be a table of HOST = URL or HOST = {url = ...}")
    routes = {}
    for raw_host, value in table.items():
        host = check_host(f"routes.{raw_host}", raw_host)
        key = f"routes.{raw_host}"
        if isinstance(value, str):
            routes[host] = make_upstream(key, value)
            continue
        if not isinstance(value, dict):
            raise ConfigError(key, "must be a URL or a table with url")
        unknown = set(value) - {"url", "library_prefix", "ca_file"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown setting")
        if "url" not in value:
            raise ConfigError(f"{key}.url", "is required")
        routes[host] = make_upstream(key, value["url"], value.get("library_prefix"),
                                     value.get("ca_file"), name=host)
    return routes


def _timeouts(table: Any, base: Timeouts) -> Timeouts:
    if not isinstance(table, dict):
        raise ConfigError("timeouts", "must be a table with connect, headers, idle")
    values = {}
    for name, value in table.items():
        if name not in ("connect", "headers", "idle"):
            raise ConfigError(f"timeouts.{name}", "unknown setting")
        values[name] = check_seconds(f"timeouts.{name}", value)
    return replace(base, **values)


def _listen(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of endpoint strings such as \"tcp:5000\"")
    return tuple(value)


def build_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> Config:
    """Merge TOML settings with command-line ones (which win) into a checked L{Config}.

    C{cli} holds only what was given on the command line: C{listen}, C{upstream},
    C{routes} (HOST -> URL), C{upstream_ca}, C{library_prefix}, C{timeouts}
    (name -> value) and C{log_format}.
    """
    unknown = set(toml) - _TOP_KEYS
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown setting")

    listen = DEFAULT_LISTEN
    if "listen" in toml:
        listen = _listen("listen", toml["listen"])
    if cli.get("listen"):
        listen = _listen("--listen", list(cli["listen"]))

    routes = _routes(toml.get("routes", {}))
    for host, url in cli.get("routes", {}).items():
        routes[check_host(f"--route {host}", host)] = make_upstream(f"--route {host}", url)

    timeouts = _timeouts(toml.get("timeouts", {}), Timeouts())
    timeouts = _timeouts_cli(cli.get("timeouts", {}), timeouts)

    upstream_ca = toml.get("upstream_ca")
    if upstream_ca is not None:
        upstream_ca = check_file("upstream_ca", upstream_ca)
    if cli.get("upstream_ca") is not None:
        upstream_ca = check_file("--upstream-ca", cli["upstream_ca"])

    default = _default_upstream(toml, cli, has_routes=bool(routes))

    log_format = cli.get("log_format") or toml.get("log_format", "text")
    if log_format not in LOG_FORMATS:
        key = "--log-format" if cli.get("log_format") else "log_format"
        raise ConfigError(key, f"must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")

    return Config(listen=listen, default=default, routes=routes, upstream_ca=upstream_ca,
                  timeouts=timeouts, log_format=log_format)


def _timeouts_cli(values: Mapping[str, Any], base: Timeouts) -> Timeouts:
    checked = {name: check_seconds(f"--{name}-timeout", v) for name, v in values.items()}
    return replace(base, **checked)


def _default_upstream(toml: Mapping[str, Any], cli: Mapping[str, Any],
                      has_routes: bool) -> UpstreamConfig | None:
    """Docker Hub unless told otherwise; none at all when only routes are configured."""
    if cli.get("upstream") is not None:
        key, url = "--upstream", cli["upstream"]
    elif "upstream" in toml:
        key, url = "upstream", toml["upstream"]
    elif has_routes:
        return None
    else:
        key, url = "upstream", DOCKER_HUB_URL
    prefix = toml.get("library_prefix")
    if prefix is not None:
        check_bool("library_prefix", prefix)
    if cli.get("library_prefix") is not None:
        prefix = cli["library_prefix"]
    return make_upstream(key, url, prefix)
