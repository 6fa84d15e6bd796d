"""Who may pull what: C{[access]} and C{--allow-ip}, C{--trusted-proxy}, C{--allow},
C{--deny}. Options given on the command line replace the file's list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockerproxy.config.checks import ConfigError, check_table
from dockerproxy.config.settings import AccessSettings
from dockerproxy.networks import Network, parse_network
from dockerproxy.patterns import RepositoryPattern

_KEYS = {"allow_ip", "trusted_proxies", "allow", "deny"}
# [access] key -> its command-line option
OPTIONS = {
    "allow_ip": "--allow-ip",
    "trusted_proxies": "--trusted-proxy",
    "allow": "--allow",
    "deny": "--deny",
}


def access_config(table: Any, cli: Mapping[str, Any]) -> AccessSettings:
    table = check_table("access", table, _KEYS)
    values: dict[str, list[str]] = {}
    for name, option in OPTIONS.items():
        if cli.get(name):
            values[name] = _strings(option, list(cli[name]))
        elif name in table:
            values[name] = _strings(f"access.{name}", table[name])
    return AccessSettings(
        allow_ip=_networks("allow_ip", values),
        trusted_proxies=_networks("trusted_proxies", values),
        allow=_patterns("allow", values),
        deny=_patterns("deny", values),
    )


def _strings(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(key, "must be a list of strings")
    return value


def _networks(name: str, values: Mapping[str, list[str]]) -> tuple[Network, ...]:
    networks = []
    for text in values.get(name, []):
        try:
            networks.append(parse_network(text))
        except ValueError:
            raise ConfigError(
                f"{OPTIONS[name]} / access.{name}",
                f"must be an address or CIDR such as 10.0.0.0/8, got {text!r}",
            ) from None
    return tuple(networks)


def _patterns(name: str, values: Mapping[str, list[str]]) -> tuple[RepositoryPattern, ...]:
    patterns = []
    for text in values.get(name, []):
        try:
            patterns.append(RepositoryPattern(text))
        except ValueError:
            raise ConfigError(
                f"{OPTIONS[name]} / access.{name}",
                f"must be a pattern such as docker.io/library/*, got {text!r}",
            ) from None
    return tuple(patterns)
