"""The admin listener: C{[admin] listen} and C{--admin-listen} (repeatable; none by
default). Given on the command line, the option's list replaces the file's.

An admin endpoint listening beyond loopback (any interface outside 127.0.0.0/8
and ::1, the default all-interfaces included; C{unix:} sockets are local) needs
the admins of C{[auth] admins}: see L{dockerproxy.admin.service}.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockerproxy.config.checks import ConfigError, check_table

OPTION = "--admin-listen"
_KEYS = {"listen"}
# A colon not escaped with a backslash: what separates an endpoint's fields.
_FIELD = re.compile(r"(?<!\\):")


@dataclass(frozen=True)
class AdminSettings:
    """Endpoints the admin pages (/metrics, /healthz, /readyz, /status) listen on."""

    listen: tuple[str, ...] = ()

    @property
    def public(self) -> tuple[str, ...]:
        """The endpoints that listen beyond loopback."""
        return tuple(e for e in self.listen if not is_loopback_endpoint(e))


def admin_config(table: Any, cli: Mapping[str, Any]) -> AdminSettings:
    table = check_table("admin", table, _KEYS)
    key, value = (
        (OPTION, list(cli["admin_listen"]))
        if cli.get("admin_listen")
        else (
            "admin.listen",
            table.get("listen", []),
        )
    )
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(key, 'must be a list of endpoint strings such as "tcp:9100"')
    return AdminSettings(listen=tuple(value))


def is_loopback_endpoint(description: str) -> bool:
    """Whether a server endpoint string only listens on this machine: a C{unix:} socket,
    or C{tcp:}, C{tcp6:} or C{ssl:} with an C{interface} in 127.0.0.0/8 or ::1. Any
    other (C{systemd:}, no interface: all of them) counts as public."""
    kind, *fields = _FIELD.split(description)
    kind = kind.strip().lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for item in fields:
        name, sep, value = item.partition("=")
        if sep and name.strip() == "interface":
            try:
                return ipaddress.ip_address(value.replace("\\", "").strip()).is_loopback
            except ValueError:
                return False
    return False
