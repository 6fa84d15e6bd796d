"""Typed settings, read from TOML and command-line options, validated in one place.

Every problem is reported as a L{ConfigError} naming the offending key, so an
operator sees one clear line instead of a traceback.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from dockerproxy import names
from dockerproxy.cachedir import default_cache_dir
from dockerproxy.presets import ALIASES, PRESETS
from dockerproxy.sizes import parse_size

DOCKER_HUB_URL = PRESETS["docker.io"].url
DOCKER_HUB_HOSTS = frozenset(
    {"docker.io", *(alias for alias, name in ALIASES.items() if name == "docker.io")})
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
class ClientLimits:
    """What one client may hold: seconds to send a whole request (from its first byte, or from
    the accept for a connection's first request), seconds a keep-alive connection may sit idle,
    and how many client connections may be open at once (more wait in the listen backlog)."""

    client_header_timeout: float = 30.0
    client_idle_timeout: float = 60.0
    max_connections: int = 10_000


@dataclass(frozen=True)
class Credentials:
    """The proxy's own account at an upstream: used only for clients that send none."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream registry and how to talk to it."""

    name: str
    url: str
    library_prefix: bool
    ca_file: str | None = None
    insecure: bool = False
    timeouts: Timeouts | None = None
    credentials: Credentials | None = field(default=None, repr=False)

    @property
    def is_docker_hub(self) -> bool:
        return urlsplit(self.url).hostname in DOCKER_HUB_HOSTS


DEFAULT_S3_REGION = "us-east-1"
# Blobs up to one part go up in a single PUT, larger ones in parts of this size.
DEFAULT_PART_SIZE = 64 * 1024 * 1024
# S3's smallest part (all but the last).
MIN_PART_SIZE = 5 * 1024 * 1024


@dataclass(frozen=True)
class S3Config:
    """Where the blob tier shared with other instances lives (see L{dockerproxy.cache.s3});
    C{prefix} is empty or ends with C{/}."""

    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = DEFAULT_S3_REGION
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str | None = field(default=None, repr=False)
    # Answer hits with a 307 to a presigned URL instead of relaying the bytes.
    redirect: bool = False
    part_size: int = DEFAULT_PART_SIZE


@dataclass(frozen=True)
class CacheConfig:
    """The pull-through cache; C{directory} None means caching is off."""

    directory: str | None
    max_size: int | None = 20 * 1024**3
    max_blob_size: int = 32 * 1024**3  # the largest blob a fill may write
    tag_ttl: float = 300.0
    stale_max_age: float = 7 * 86400.0
    s3: S3Config | None = None  # the blob tier shared with other instances


def check_size(key: str, value: Any) -> int:
    """A byte count: 1048576, "512MiB", "20GiB", "1.5TB"."""
    try:
        return parse_size(value)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


def _cache(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> CacheConfig:
    table = toml.get("cache", {})
    if not isinstance(table, dict):
        raise ConfigError("cache", "must be a table")
    unknown = set(table) - {"enabled", "dir", "max_size", "max_blob_size", "tag_ttl",
                            "stale_max_age", "s3"}
    if unknown:
        raise ConfigError(f"cache.{sorted(unknown)[0]}", "unknown setting")
    enabled = check_bool("cache.enabled", table.get("enabled", True))
    if cli.get("cache_enabled") is False:
        enabled = False
    directory = table.get("dir")
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ConfigError("cache.dir", "must be a directory path")
    if cli.get("cache_dir"):
        directory = cli["cache_dir"]
    max_size: int | None = CacheConfig.max_size
    if "max_size" in table:
        max_size = check_size("cache.max_size", table["max_size"])
    if cli.get("cache_max_size") is not None:
        max_size = check_size("--cache-max-size", cli["cache_max_size"])
    max_blob_size = CacheConfig.max_blob_size
    if "max_blob_size" in table:
        max_blob_size = check_size("cache.max_blob_size", table["max_blob_size"])
    if cli.get("max_blob_size") is not None:
        max_blob_size = check_size("--max-blob-size", cli["max_blob_size"])
    tag_ttl = _seconds_setting(table, cli, "tag_ttl", CacheConfig.tag_ttl)
    stale = _seconds_setting(table, cli, "stale_max_age", CacheConfig.stale_max_age)
    s3 = _cache_s3(table.get("s3", {}), cli)
    if s3 is not None and not enabled:
        raise ConfigError("--no-cache" if cli.get("cache_enabled") is False else "cache.enabled",
                          "the S3 cache needs the local cache, which stages its uploads")
    return CacheConfig(directory=(directory or default_cache_dir()) if enabled else None,
                       max_size=max_size, max_blob_size=max_blob_size, tag_ttl=tag_ttl,
                       stale_max_age=stale, s3=s3)


_S3_KEYS = {"endpoint", "bucket", "prefix", "region", "access_key_id", "secret_access_key",
            "redirect", "part_size"}
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
_REGION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _cache_s3(table: Any, cli: Mapping[str, Any],
              environ: Mapping[str, str] = os.environ) -> S3Config | None:
    """[cache.s3] and --cache-s3-*: the shared S3 tier, None without endpoint and bucket.

    Credentials come from the file, else from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    (and AWS_SESSION_TOKEN); the region from the file or option, else AWS_REGION or
    AWS_DEFAULT_REGION, else us-east-1.
    """
    if not isinstance(table, dict):
        raise ConfigError("cache.s3", "must be a table")
    unknown = set(table) - _S3_KEYS
    if unknown:
        raise ConfigError(f"cache.s3.{sorted(unknown)[0]}", "unknown setting")
    given: dict[str, tuple[str, Any]] = {}  # name -> (key as the operator wrote it, value)
    for name in ("endpoint", "bucket", "prefix", "region"):
        if cli.get(f"cache_s3_{name}") is not None:
            given[name] = (f"--cache-s3-{name}", cli[f"cache_s3_{name}"])
        elif name in table:
            given[name] = (f"cache.s3.{name}", table[name])
    if "endpoint" not in given and "bucket" not in given:
        if table or cli.get("cache_s3_redirect"):
            raise ConfigError("--cache-s3-endpoint", "is required to use an S3 cache")
        return None
    for name, other in (("endpoint", "bucket"), ("bucket", "endpoint")):
        if name not in given:
            other_key = given[other][0]
            key = f"--cache-s3-{name}" if other_key.startswith("--") else f"cache.s3.{name}"
            raise ConfigError(key, f"is required with {other_key}")
    endpoint_key, endpoint = given["endpoint"]
    endpoint = check_url(endpoint_key, endpoint)
    bucket_key, bucket = given["bucket"]
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket):
        raise ConfigError(bucket_key, f"must be an S3 bucket name, got {bucket!r}")
    prefix_key, prefix = given.get("prefix", ("", ""))
    prefix = prefix.strip("/") if isinstance(prefix, str) else prefix
    if prefix and (not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix)):
        raise ConfigError(prefix_key, "must be /-separated names of letters, digits, '.', '_' "
                                      f"and '-', got {given['prefix'][1]!r}")
    region_key, region = given.get("region", ("AWS_REGION", environ.get("AWS_REGION")
                                              or environ.get("AWS_DEFAULT_REGION")
                                              or DEFAULT_S3_REGION))
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise ConfigError(region_key, f"must be a region name such as us-east-1, got {region!r}")
    key_id, secret, token = table.get("access_key_id"), table.get("secret_access_key"), None
    for name, value in (("access_key_id", key_id), ("secret_access_key", secret)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"cache.s3.{name}", "must be a non-empty string")
    if (key_id is None) != (secret is None):
        missing = "access_key_id" if key_id is None else "secret_access_key"
        raise ConfigError(f"cache.s3.{missing}", "is required with the other credential")
    if key_id is None:
        key_id = environ.get("AWS_ACCESS_KEY_ID")
        secret = environ.get("AWS_SECRET_ACCESS_KEY")
        token = environ.get("AWS_SESSION_TOKEN") or None
        if not key_id or not secret:
            raise ConfigError(endpoint_key, "needs credentials: cache.s3.access_key_id and "
                              "secret_access_key, or AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY in the environment")
    redirect = check_bool("cache.s3.redirect", table.get("redirect", False))
    if cli.get("cache_s3_redirect"):
        redirect = True
    part_size = S3Config.part_size
    if "part_size" in table:
        part_size = check_size("cache.s3.part_size", table["part_size"])
        if part_size < MIN_PART_SIZE:
            raise ConfigError("cache.s3.part_size", "must be at least 5MiB (S3's smallest "
                              f"part), got {table['part_size']!r}")
    return S3Config(endpoint=endpoint, bucket=bucket, prefix=f"{prefix}/" if prefix else "",
                    region=region, access_key_id=key_id, secret_access_key=secret,
                    session_token=token, redirect=redirect, part_size=part_size)


def _seconds_setting(table: Mapping[str, Any], cli: Mapping[str, Any], name: str,
                     default: float) -> float:
    value = default
    if name in table:
        value = check_seconds(f"cache.{name}", table[name], maximum=365 * 86400)
    if cli.get(name) is not None:
        value = check_seconds(f"--{name.replace('_', '-')}", cli[name], maximum=365 * 86400)
    return value


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    default: UpstreamConfig | None = None
    routes: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    registries: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    upstream_ca: str | None = None
    timeouts: Timeouts = Timeouts()
    log_format: str = "text"
    cache: CacheConfig = CacheConfig(directory=None)
    limits: ClientLimits = ClientLimits()
    # scheme://host[:port] clients are told to use (challenge realms, the home page);
    # None: the scheme and Host of each request.
    public_url: str | None = None
    # Seconds a stopping proxy lets responses under way finish (dockerproxy.drain).
    drain_timeout: float = 30.0


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


def check_seconds(key: str, value: Any, maximum: float = 86400) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(key, f"must be a number of seconds, got {value!r}") from None
    if not 0 < seconds <= maximum:
        raise ConfigError(key, f"must be between 0 and {maximum:g} seconds, got {value!r}")
    return seconds


def make_upstream(key: str, url: Any, library_prefix: Any = None,
                  ca_file: Any = None, name: str | None = None,
                  short: bool = False) -> UpstreamConfig:
    """Validate one upstream; C{library_prefix} None means Docker Hub's rule for Docker Hub.

    C{short} says the URL was given on its own (C{KEY = URL}), so errors name C{key}
    itself rather than C{key.url}.
    """
    checked = check_url(key if short or not name else f"{key}.url", url)
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
             "log_format", "presets", "registries", "cache", "limits", "public_url",
             "drain_timeout"}


_UPSTREAM_KEYS = {"url", "library_prefix", "ca_file", "insecure", "timeouts", "username",
                  "password", "password_file", "token_file"}


def upstream_from_table(key: str, name: str, value: Any, base: Timeouts,
                        library_prefix_default: bool | None = None) -> UpstreamConfig:
    """One upstream from C{URL} or C{{url = ..., credentials, ca_file, insecure, timeouts}}."""
    if isinstance(value, str):
        return make_upstream(key, value, library_prefix_default, name=name, short=True)
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a URL or a table with url")
    unknown = set(value) - _UPSTREAM_KEYS
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown setting")
    if "url" not in value:
        raise ConfigError(f"{key}.url", "is required")
    upstream = make_upstream(key, value["url"], value.get("library_prefix",
                                                          library_prefix_default),
                             value.get("ca_file"), name=name)
    insecure = check_bool(f"{key}.insecure", value.get("insecure", False))
    timeouts = None
    if "timeouts" in value:
        timeouts = _timeouts(value["timeouts"], base, f"{key}.timeouts")
    return replace(upstream, insecure=insecure, timeouts=timeouts,
                   credentials=_credentials(key, value))


def _credentials(key: str, table: Mapping[str, Any]) -> Credentials | None:
    """username with password, password_file or token_file; secrets never appear in errors."""
    secrets = [k for k in ("password", "password_file", "token_file") if k in table]
    if len(secrets) > 1:
        raise ConfigError(f"{key}.{secrets[1]}", f"give only one of {', '.join(secrets)}")
    username = table.get("username")
    if username is not None and (not isinstance(username, str) or not username):
        raise ConfigError(f"{key}.username", "must be a non-empty string")
    if not secrets:
        if username is not None:
            raise ConfigError(f"{key}.username", "needs password, password_file or token_file")
        return None
    secret_key = secrets[0]
    if secret_key == "password":
        if not isinstance(table["password"], str) or not table["password"]:
            raise ConfigError(f"{key}.password", "must be a non-empty string")
        password = table["password"]
    else:
        password = _read_secret(f"{key}.{secret_key}", table[secret_key])
    if username is None:
        if secret_key != "token_file":
            raise ConfigError(f"{key}.username", "is required with a password")
        username = "token"
    return Credentials(username, password)


def _read_secret(key: str, path: Any) -> str:
    path = check_file(key, path)
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(key, f"cannot read {path}: {e}") from None
    if not secret:
        raise ConfigError(key, f"{path} is empty")
    return secret


def _registries(toml: Mapping[str, Any], cli: Mapping[str, Any],
                base: Timeouts) -> dict[str, UpstreamConfig]:
    """Presets (unless turned off), then [registries.NAME] tables, then --registry NAME=URL."""
    presets_on = check_bool("presets", toml.get("presets", True))
    if cli.get("presets") is False:
        presets_on = False
    registries: dict[str, UpstreamConfig] = {}
    if presets_on:
        for name, preset in PRESETS.items():
            registries[name] = UpstreamConfig(name, preset.url, preset.library_prefix)
    table = toml.get("registries", {})
    if not isinstance(table, dict):
        raise ConfigError("registries", "must be a table of NAME = URL or NAME = {url = ...}")
    for raw_name, value in table.items():
        name = check_registry_name(f"registries.{raw_name}", raw_name)
        if value is False:
            registries.pop(name, None)
            continue
        registries[name] = upstream_from_table(f"registries.{raw_name}", name, value, base,
                                               _preset_prefix(name))
    for raw_name, url in cli.get("registries", {}).items():
        key = f"--registry {raw_name}"
        name = check_registry_name(key, raw_name)
        upstream = make_upstream(key, url, _preset_prefix(name), name=name, short=True)
        known = registries.get(name)
        if known is not None:
            upstream = replace(known, url=upstream.url)
        registries[name] = upstream
    return registries


def _preset_prefix(name: str) -> bool | None:
    preset = PRESETS.get(name)
    return True if preset is not None and preset.library_prefix else None


def check_registry_name(key: str, value: str) -> str:
    """A registry name as clients write it: a host name with an optional port."""
    name = check_host(key, value)
    if not names.REGISTRY_NAME_RE.fullmatch(name):
        raise ConfigError(key, f"must be a registry host name such as ghcr.io, got {value!r}")
    return name


def _routes(table: Any, registries: Mapping[str, UpstreamConfig],
            base: Timeouts) -> dict[str, UpstreamConfig]:
    if not isinstance(table, dict):
        raise ConfigError("routes", "must be a table of HOST = URL or HOST = {url = ...}")
    routes = {}
    for raw_host, value in table.items():
        key = f"routes.{raw_host}"
        host = check_host(key, raw_host)
        routes[host] = route_target(key, host, value, registries, base)
    return routes


def route_target(key: str, host: str, value: Any, registries: Mapping[str, UpstreamConfig],
                 base: Timeouts) -> UpstreamConfig:
    """A route's upstream: a configured registry's name, a URL, or a table with url."""
    if isinstance(value, str) and "://" not in value:
        upstream = registries.get(value.lower())
        if upstream is None:
            raise ConfigError(key, f"names no configured registry: {value!r}")
        return upstream
    return upstream_from_table(key, host, value, base)


def _timeouts(table: Any, base: Timeouts, key: str = "timeouts") -> Timeouts:
    if not isinstance(table, dict):
        raise ConfigError(key, "must be a table with connect, headers, idle")
    values = {}
    for name, value in table.items():
        if name not in ("connect", "headers", "idle"):
            raise ConfigError(f"{key}.{name}", "unknown setting")
        values[name] = check_seconds(f"{key}.{name}", value)
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
    C{routes} (HOST -> URL or registry name), C{registries} (NAME -> URL),
    C{presets} (False to drop them), C{upstream_ca}, C{library_prefix},
    C{timeouts} (name -> value), C{log_format}, and for the cache C{cache_enabled}
    (False for --no-cache), C{cache_dir}, C{cache_max_size}, C{tag_ttl},
    C{stale_max_age}, C{cache_s3_endpoint}, C{cache_s3_bucket}, C{cache_s3_prefix},
    C{cache_s3_region} and C{cache_s3_redirect} (True for --cache-s3-redirect), and for
    clients C{client_header_timeout}, C{client_idle_timeout}, C{max_connections} and
    C{public_url}, and C{drain_timeout}.
    """
    unknown = set(toml) - _TOP_KEYS
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown setting")

    listen = DEFAULT_LISTEN
    if "listen" in toml:
        listen = _listen("listen", toml["listen"])
    if cli.get("listen"):
        listen = _listen("--listen", list(cli["listen"]))

    timeouts = _timeouts(toml.get("timeouts", {}), Timeouts())
    timeouts = _timeouts_cli(cli.get("timeouts", {}), timeouts)

    registries = _registries(toml, cli, timeouts)
    routes = _routes(toml.get("routes", {}), registries, timeouts)
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
        toml.get("registries") or {})
    default = _default_upstream(toml, cli, registries, has_routes=bool(routes),
                                explicit_hub=explicit_hub)
    if cli.get("upstream_credentials") is not None:
        if default is None:
            raise ConfigError("--upstream-credentials", "there is no default upstream")
        default = replace(default, credentials=credentials_file(
            "--upstream-credentials", cli["upstream_credentials"]))
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

    return Config(listen=listen, default=default, routes=routes, registries=registries,
                  upstream_ca=upstream_ca, timeouts=timeouts, log_format=log_format,
                  cache=_cache(toml, cli), limits=_limits(toml.get("limits", {}), cli),
                  public_url=public_url, drain_timeout=_drain_timeout(toml, cli))


def _drain_timeout(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> float:
    if cli.get("drain_timeout") is not None:
        return check_seconds("--drain-timeout", cli["drain_timeout"], maximum=3600)
    if "drain_timeout" in toml:
        return check_seconds("drain_timeout", toml["drain_timeout"], maximum=3600)
    return Config.drain_timeout


def _limits(table: Any, cli: Mapping[str, Any]) -> ClientLimits:
    """C{[limits]} and C{--client-header-timeout}, C{--client-idle-timeout},
    C{--max-connections}; the key names are the options' without dashes."""
    if not isinstance(table, dict):
        raise ConfigError("limits", "must be a table")
    unknown = set(table) - set(ClientLimits.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"limits.{sorted(unknown)[0]}", "unknown setting")
    values: dict[str, Any] = {}
    for name in ClientLimits.__dataclass_fields__:
        option = f"--{name.replace('_', '-')}"
        key, value = (option, cli[name]) if cli.get(name) is not None else (
            f"limits.{name}", table.get(name))
        if value is None:
            continue
        if name == "max_connections":
            values[name] = check_count(key, value, maximum=1_000_000)
        else:
            values[name] = check_seconds(key, value)
    return ClientLimits(**values)


def check_count(key: str, value: Any, maximum: int) -> int:
    """A whole number from 1 to C{maximum}, from TOML (an int) or an option (a string)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(key, f"must be a whole number from 1 to {maximum}, got {value!r}")
    return value


def _timeouts_cli(values: Mapping[str, Any], base: Timeouts) -> Timeouts:
    checked = {name: check_seconds(f"--{name}-timeout", v) for name, v in values.items()}
    return replace(base, **checked)


def _default_upstream(toml: Mapping[str, Any], cli: Mapping[str, Any],
                      registries: Mapping[str, UpstreamConfig], has_routes: bool,
                      explicit_hub: bool) -> UpstreamConfig | None:
    """The upstream for names with no registry prefix, on hosts no route names.

    C{--upstream} or C{upstream} if given (a registry with that URL keeps its
    settings), else the C{docker.io} registry; with routes, only a C{docker.io}
    configured on purpose (not the preset) is a default.
    """
    prefix = toml.get("library_prefix")
    if prefix is not None:
        check_bool("library_prefix", prefix)
    if cli.get("library_prefix") is not None:
        prefix = cli["library_prefix"]
    if cli.get("upstream") is not None:
        key, url = "--upstream", cli["upstream"]
    elif "upstream" in toml:
        key, url = "upstream", toml["upstream"]
    else:
        hub = registries.get("docker.io")
        if hub is None or (has_routes and not explicit_hub):
            # Host-routed deployments keep unknown Hosts unanswered unless docker.io
            # was configured on purpose.
            return None
        return hub if prefix is None else replace(hub, library_prefix=prefix)
    upstream = make_upstream(key, url, prefix)
    for registry in registries.values():
        if registry.url == upstream.url:
            return replace(registry, library_prefix=upstream.library_prefix)
    return upstream


def credentials_file(key: str, path: Any) -> Credentials:
    """C{--upstream-credentials FILE}: a TOML file with C{username} and C{password}."""
    path = check_file(key, path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(key, f"cannot read {path}: {e}") from None
    unknown = set(table) - {"username", "password"}
    if unknown:
        raise ConfigError(f"{key} {sorted(unknown)[0]}", "unknown setting")
    credentials = _credentials(key, table)
    if credentials is None:
        raise ConfigError(key, f"{path} needs username and password")
    return credentials
