"""A fleet of instances sharing one Redis: C{[fleet]} and C{--redis URL}.

Several proxies behind one load balancer share their tags, manifests, access
records and blob-fill locks through Redis (see L{dockerproxy.fleet}); the blobs
themselves go through the S3 tier (C{[cache.s3]}). Without a URL each instance
keeps to itself. Only C{redis://} and C{rediss://} (TLS) URLs are taken: a
C{unix://} socket would be one machine's, which is no fleet. The URL may carry a
password, so it is masked wherever settings are shown and never echoed in an
error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dockerproxy.config.checks import ConfigError, check_seconds, check_table

_KEYS = {"redis", "prefix", "timeout"}
_TLS_PARAMETERS = frozenset(
    {
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_min_version",
    }
)
_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:._-/")


@dataclass(frozen=True)
class FleetSettings:
    """Redis for the fleet (None: none). C{prefix} starts every key, so fleets can share a
    Redis; C{timeout} bounds each call (connect and reply), after which the instance
    goes on alone."""

    redis: str | None = field(default=None, repr=False)  # may carry a password
    prefix: str = "dockerproxy:"
    timeout: float = 0.5


def fleet_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> FleetSettings:
    table = toml.get("fleet", {})
    table = check_table("fleet", table, _KEYS)
    url = None
    if cli.get("redis") is not None:
        url = check_redis_url("--redis", cli["redis"])
    elif "redis" in table:
        url = check_redis_url("fleet.redis", table["redis"])
    prefix = table.get("prefix", FleetSettings.prefix)
    if (
        not isinstance(prefix, str)
        or not 1 <= len(prefix) <= 64
        or not set(prefix) <= _PREFIX_CHARS
    ):
        raise ConfigError("fleet.prefix", "must be 1 to 64 letters, digits or :._-/")
    timeout = FleetSettings.timeout
    if "timeout" in table:
        timeout = check_seconds("fleet.timeout", table["timeout"], maximum=30)
    return FleetSettings(url, prefix, timeout)


def check_redis_url(key: str, value: Any) -> str:
    """C{redis://[[user]:password@]host[:port][/db]} or C{rediss://...}; the value is not
    repeated in the error, since it may hold a password."""
    if not isinstance(value, str):
        raise ConfigError(key, "must be a redis:// or rediss:// URL string")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(key, "is not a valid redis:// or rediss:// URL") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(key, "must be a redis:// or rediss:// URL with a host")
    if port == 0:
        raise ConfigError(key, "has an invalid port")
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and int(db) < 16):
        raise ConfigError(key, "the path names a database number from 0 to 15, or nothing")
    # redis-py lets URL parameters override the client's own settings (its timeouts among
    # them): only the TLS ones are taken, e.g. rediss://...?ssl_ca_certs=/etc/ca.pem.
    names = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    other = sorted(names - _TLS_PARAMETERS)
    if other or parts.fragment:
        raise ConfigError(key, f"takes only the parameters {', '.join(sorted(_TLS_PARAMETERS))}")
    from redis.connection import parse_url  # the client's own reading of the URL

    try:
        parse_url(value)
    except ValueError:
        raise ConfigError(key, "has a parameter with an invalid value") from None
    return value
