"""Checks for single settings: each failure is a L{ConfigError} naming the key as the
operator wrote it."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from dockerproxy import names
from dockerproxy.sizes import parse_size


class ConfigError(ValueError):
    """A bad setting: C{key} names it the way the operator wrote it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def check_table(key: str, value: Any, allowed: Collection[str]) -> dict[str, Any]:
    """C{value} as the table C{key}: a table, each of its keys one of C{allowed}."""
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table")
    unknown = set(value) - set(allowed)
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown setting")
    return value


def check_size(key: str, value: Any) -> int:
    """A byte count: 1048576, "512MiB", "20GiB", "1.5TB"."""
    try:
        return parse_size(value)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


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


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config", f"{path} is not valid TOML: {e}") from None


def check_registry_name(key: str, value: str) -> str:
    """A registry name as clients write it: a host name with an optional port."""
    name = check_host(key, value)
    if not names.REGISTRY_NAME_RE.fullmatch(name):
        raise ConfigError(key, f"must be a registry host name such as ghcr.io, got {value!r}")
    return name


def check_count(key: str, value: Any, maximum: int) -> int:
    """A whole number from 1 to C{maximum}, from TOML (an int) or an option (a string)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(key, f"must be a whole number from 1 to {maximum}, got {value!r}")
    return value
