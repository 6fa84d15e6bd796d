"""The effective settings as lines an operator can read, secrets masked
(C{dockerproxy check-config}).

Every setting is walked generically, so settings added later are shown too. A
secret is never printed: a field declared with C{repr=False} (the project's mark
for a secret: passwords, S3 secret keys, session tokens) or named like one shows
as L{MASK} when set.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from dockerproxy.imagerefs import ImageRef, Platform
from dockerproxy.patterns import RepositoryPattern

# Dataclasses shown as one value (their text), not as tables of their fields.
_LEAVES = (RepositoryPattern, ImageRef, Platform)

MASK = "********"
SECRET_NAME = re.compile(r"(password|secret|secret_key|secret_access_key|token|private_key)$")


def show_settings(config: Any) -> list[str]:
    """C{key = value} lines, dotted keys as in the TOML file, values as JSON
    (C{null}: unset)."""
    return [f"{key} = {json.dumps(value)}" for key, value in _flatten("", config)]


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, (type, *_LEAVES)):
        for field in dataclasses.fields(value):
            if field.name.startswith("_"):
                continue
            item = getattr(value, field.name)
            key = f"{prefix}{field.name}"
            if _is_secret(field) and not dataclasses.is_dataclass(item):
                yield key, MASK if item else item
            else:
                yield from _setting(key, item)
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _setting(f"{prefix}{json.dumps(str(name))}", item)


def _setting(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and not value:
        yield key, {}
    elif _nests(value):
        yield from _flatten(f"{key}.", value)
    elif isinstance(value, tuple) and value and all(_nests(item) for item in value):
        for i, item in enumerate(value):  # an array of tables: warm[0].images
            yield from _flatten(f"{key}[{i}].", item)
    else:
        yield key, _plain(value)


def _nests(value: Any) -> bool:
    return (dataclasses.is_dataclass(value) and not isinstance(value, _LEAVES)) or isinstance(
        value, Mapping
    )


def _is_secret(field: dataclasses.Field[Any]) -> bool:
    return not field.repr or SECRET_NAME.search(field.name) is not None


def _plain(value: Any) -> Any:
    """A JSON value for a leaf setting."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, RepositoryPattern):
        return value.text
    if isinstance(value, ImageRef | Platform):
        return str(value)
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, tuple | list | frozenset | set):
        return [_plain(item) for item in value]
    return str(value)
