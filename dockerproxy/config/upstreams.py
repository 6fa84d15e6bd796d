"""Upstream registries: presets, C{[registries]}, C{[routes]}, the default upstream, credentials."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from dockerproxy.config.checks import (
    ConfigError,
    check_bool,
    check_file,
    check_host,
    check_registry_name,
    check_seconds,
    check_url,
)
from dockerproxy.config.settings import Credentials, Timeouts, UpstreamConfig
from dockerproxy.presets import PRESETS


def make_upstream(
    key: str,
    url: Any,
    library_prefix: Any = None,
    ca_file: Any = None,
    name: str | None = None,
    short: bool = False,
) -> UpstreamConfig:
    """Validate one upstream; C{library_prefix} None means Docker Hub's rule for Docker Hub.

    C{short} says the URL was given on its own (C{KEY = URL}), so errors name C{key}
    itself rather than C{key.url}.
    """
    checked = check_url(key if short or not name else f"{key}.url", url)
    upstream = UpstreamConfig(
        name=name or urlsplit(checked).netloc, url=checked, library_prefix=False
    )
    if library_prefix is None:
        prefix = upstream.is_docker_hub
    else:
        prefix = check_bool(f"{key}.library_prefix", library_prefix)
    ca = None if ca_file is None else check_file(f"{key}.ca_file", ca_file)
    return replace(upstream, library_prefix=prefix, ca_file=ca)


_UPSTREAM_KEYS = {
    "url",
    "library_prefix",
    "ca_file",
    "insecure",
    "timeouts",
    "username",
    "password",
    "password_file",
    "token_file",
}


def upstream_from_table(
    key: str, name: str, value: Any, base: Timeouts, library_prefix_default: bool | None = None
) -> UpstreamConfig:
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
    upstream = make_upstream(
        key,
        value["url"],
        value.get("library_prefix", library_prefix_default),
        value.get("ca_file"),
        name=name,
    )
    insecure = check_bool(f"{key}.insecure", value.get("insecure", False))
    timeouts = None
    if "timeouts" in value:
        timeouts = timeouts_config(value["timeouts"], base, f"{key}.timeouts")
    return replace(
        upstream, insecure=insecure, timeouts=timeouts, credentials=_credentials(key, value)
    )


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


def registries_config(
    toml: Mapping[str, Any], cli: Mapping[str, Any], base: Timeouts
) -> dict[str, UpstreamConfig]:
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
        registries[name] = upstream_from_table(
            f"registries.{raw_name}", name, value, base, _preset_prefix(name)
        )
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


def routes_config(
    table: Any, registries: Mapping[str, UpstreamConfig], base: Timeouts
) -> dict[str, UpstreamConfig]:
    if not isinstance(table, dict):
        raise ConfigError("routes", "must be a table of HOST = URL or HOST = {url = ...}")
    routes = {}
    for raw_host, value in table.items():
        key = f"routes.{raw_host}"
        host = check_host(key, raw_host)
        routes[host] = route_target(key, host, value, registries, base)
    return routes


def route_target(
    key: str, host: str, value: Any, registries: Mapping[str, UpstreamConfig], base: Timeouts
) -> UpstreamConfig:
    """A route's upstream: a configured registry's name, a URL, or a table with url."""
    if isinstance(value, str) and "://" not in value:
        upstream = registries.get(value.lower())
        if upstream is None:
            raise ConfigError(key, f"names no configured registry: {value!r}")
        return upstream
    return upstream_from_table(key, host, value, base)


def timeouts_config(table: Any, base: Timeouts, key: str = "timeouts") -> Timeouts:
    if not isinstance(table, dict):
        raise ConfigError(key, "must be a table with connect, headers, idle")
    values = {}
    for name, value in table.items():
        if name not in ("connect", "headers", "idle"):
            raise ConfigError(f"{key}.{name}", "unknown setting")
        values[name] = check_seconds(f"{key}.{name}", value)
    return replace(base, **values)


def timeouts_from_options(values: Mapping[str, Any], base: Timeouts) -> Timeouts:
    checked = {name: check_seconds(f"--{name}-timeout", v) for name, v in values.items()}
    return replace(base, **checked)


def default_upstream(
    toml: Mapping[str, Any],
    cli: Mapping[str, Any],
    registries: Mapping[str, UpstreamConfig],
    has_routes: bool,
    explicit_hub: bool,
) -> UpstreamConfig | None:
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
