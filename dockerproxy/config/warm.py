"""C{[[warm]]}: images the daemon pulls through itself on a schedule, so the first pull
after an upstream release is a cache hit (L{dockerproxy.warmservice}).

::

    [[warm]]
    images = ["alpine:3.20", "ghcr.io/acme/app:1"]
    platforms = ["linux/amd64", "linux/arm64"]   # default ["linux/amd64"]; "all" for every one
    interval = "6h"                              # seconds, or 30s / 15m / 6h / 1d; at least 1s
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dockerproxy.config.checks import ConfigError
from dockerproxy.imagerefs import (
    DEFAULT_PLATFORMS,
    BadReference,
    ImageRef,
    Platform,
    parse_image,
    parse_platform,
)

DEFAULT_INTERVAL = 6 * 3600.0
# Short enough for tests; each run is one at a time and bounded, so a short one costs
# a tag revalidation per image (a HEAD upstream once the tag's TTL is over).
MIN_INTERVAL = 1.0
MAX_INTERVAL = 30 * 86400.0
MAX_IMAGES = 1000
_KEYS = {"images", "platforms", "interval"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?")
_UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class WarmEntry:
    """Images kept warm for C{platforms} (None: all of an index's), every C{interval} s."""

    images: tuple[ImageRef, ...]
    platforms: tuple[Platform, ...] | None = DEFAULT_PLATFORMS
    interval: float = DEFAULT_INTERVAL


def warm_config(value: Any) -> tuple[WarmEntry, ...]:
    """The C{[[warm]]} array of tables."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError("warm", "must be an array of tables ([[warm]])")
    entries = tuple(_entry(f"warm[{i}]", table) for i, table in enumerate(value))
    if sum(len(e.images) for e in entries) > MAX_IMAGES:
        raise ConfigError("warm", f"names more than {MAX_IMAGES} images")
    return entries


def _entry(key: str, table: dict[str, Any]) -> WarmEntry:
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown setting")
    images = table.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise ConfigError(f"{key}.images", 'must be a list of images such as ["alpine:3.20"]')
    try:
        refs = tuple(parse_image(i) for i in images)
    except BadReference as e:
        raise ConfigError(f"{key}.images", str(e)) from None
    return WarmEntry(
        refs,
        _platforms(f"{key}.platforms", table.get("platforms")),
        check_interval(f"{key}.interval", table.get("interval", DEFAULT_INTERVAL)),
    )


def _platforms(key: str, value: Any) -> tuple[Platform, ...] | None:
    if value is None:
        return DEFAULT_PLATFORMS
    if value == "all":
        return None
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise ConfigError(key, 'must be a list such as ["linux/amd64", "linux/arm64"], or "all"')
    try:
        return tuple(parse_platform(p) for p in value)
    except BadReference as e:
        raise ConfigError(key, str(e)) from None


def check_interval(key: str, value: Any) -> float:
    """Seconds as a number, or a duration: C{"90s"}, C{"15m"}, C{"6h"}, C{"1d"}."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value.strip().lower())
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None:
        raise ConfigError(key, f'must be seconds or a duration such as "6h", got {value!r}')
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ConfigError(
            key, f"must be from {MIN_INTERVAL:g} s to {MAX_INTERVAL / 86400:g} days, got {value!r}"
        )
    return seconds
