"""How much one client may use: C{rate_limit}, C{rate_burst}, C{bandwidth_limit} and
C{max_pulls} in C{[limits]} (and C{--rate-limit}, C{--rate-burst}, C{--bandwidth-limit},
C{--max-pulls}), and per user in C{[users.NAME]} tables with the same keys.

A client is the authenticated user when there is one, else the client's address. A
user's table overrides the keys it sets; the others are the C{[limits]} ones. A value
of 0 turns a limit off (a CI user unlimited while everybody else is limited).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from dockerproxy.config.checks import ConfigError, check_table
from dockerproxy.sizes import parse_size

# [limits] key -> its command-line option (Options reads them by these names).
OPTIONS = {
    "rate_limit": "--rate-limit",
    "rate_burst": "--rate-burst",
    "bandwidth_limit": "--bandwidth-limit",
    "max_pulls": "--max-pulls",
}
KEYS = frozenset(OPTIONS)
# The least --bandwidth-limit: below it a client's downloads would wait their turn
# for so long that the upstream's idle timeout could cut them.
MIN_BANDWIDTH = 16 * 1024
_RATE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute))?\s*")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}


@dataclass(frozen=True)
class Quota:
    """What one client may use; None is no limit.

    C{rate_limit} is requests a second, C{rate_burst} how many may come at once (by
    default one second's worth, at least 1), C{bandwidth_limit} response body bytes
    a second over all its responses, C{max_pulls} blob downloads at once.
    """

    rate_limit: float | None = None
    rate_burst: int | None = None
    bandwidth_limit: int | None = None
    max_pulls: int | None = None

    @property
    def burst(self) -> int:
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1, math.ceil(self.rate_limit or 1))

    @property
    def unlimited(self) -> bool:
        return self.rate_limit is None and self.bandwidth_limit is None and self.max_pulls is None


@dataclass(frozen=True)
class Quotas:
    """The quota of clients with no table of their own, and each user's."""

    default: Quota = Quota()
    users: Mapping[str, Quota] = field(default_factory=dict)

    def for_user(self, user: str | None) -> Quota:
        if user is None:
            return self.default
        return self.users.get(user, self.default)

    @cached_property
    def unlimited(self) -> bool:
        """No client has any limit (asked for every request, so worked out once)."""
        return self.default.unlimited and all(q.unlimited for q in self.users.values())

    @cached_property
    def shaped(self) -> bool:
        """Whether any client has a bandwidth limit."""
        quotas = [self.default, *self.users.values()]
        return any(q.bandwidth_limit is not None for q in quotas)


def quotas_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> Quotas:
    """C{[limits]}' quota keys with the options over them, and the C{[users]} tables."""
    limits = toml.get("limits", {})
    values: dict[str, Any] = {}
    if isinstance(limits, dict):  # else the [limits] check reports it
        values = {key: (f"limits.{key}", limits[key]) for key in KEYS if key in limits}
    for key, option in OPTIONS.items():
        if cli.get(key) is not None:
            values[key] = (option, cli[key])
    default = replace(Quota(), **_quota_values(values))
    return Quotas(default, _users(toml.get("users", {}), default))


def _users(table: Any, default: Quota) -> dict[str, Quota]:
    if not isinstance(table, dict):
        raise ConfigError("users", "must be a table of [users.NAME] tables")
    users = {}
    for name, settings in table.items():
        settings = check_table(f"users.{name}", settings, KEYS)
        values = {key: (f"users.{name}.{key}", value) for key, value in settings.items()}
        users[name] = replace(default, **_quota_values(values))
    return users


def _quota_values(values: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    checks = {
        "rate_limit": check_rate,
        "rate_burst": check_burst,
        "bandwidth_limit": check_bandwidth,
        "max_pulls": check_pulls,
    }
    return {name: checks[name](key, value) for name, (key, value) in values.items()}


def _off(value: Any) -> bool:
    """0 (or "0") turns a limit off."""
    return (value == 0 and not isinstance(value, bool)) or value == "0"


def check_rate(key: str, value: Any) -> float | None:
    """Requests a second: C{"10/s"}, C{"600/m"}, C{10}, C{0.5}; 0 for no limit."""
    if _off(value):
        return None
    valid = isinstance(value, int | float | str) and not isinstance(value, bool)
    match = _RATE_RE.fullmatch(str(value)) if valid else None
    rate = float(match.group(1)) / _PER[match.group(2)] if match else 0.0
    if not 0 < rate <= 1_000_000:
        raise ConfigError(key, f"must be a rate such as 10/s or 600/m (0: none), got {value!r}")
    return rate


def check_burst(key: str, value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigError(key, f"must be a whole number from 1 to 1000000, got {value!r}")
    return value


def check_bandwidth(key: str, value: Any) -> int | None:
    """Bytes a second: C{"20MiB/s"}, C{"500KB/s"}, C{1048576}; 0 for no limit."""
    if _off(value):
        return None
    text = value.strip().removesuffix("/s") if isinstance(value, str) else value
    try:
        rate = parse_size(text)
    except ValueError:
        rate = 0
    if rate < MIN_BANDWIDTH:
        raise ConfigError(
            key, f"must be a rate such as 20MiB/s, at least 16KiB/s (0: none), got {value!r}"
        )
    return rate


def check_pulls(key: str, value: Any) -> int | None:
    if _off(value):
        return None
    try:
        return check_burst(key, value)
    except ConfigError:
        raise ConfigError(
            key, f"must be a whole number from 1 to 1000000 (0: none), got {value!r}"
        ) from None
