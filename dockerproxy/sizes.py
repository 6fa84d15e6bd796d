"""Byte counts as operators write them: C{1048576}, C{"512MiB"}, C{"20GiB"}, C{"1.5TB"}.

A leaf shared by the settings (L{dockerproxy.config}) and the cache's admin
command, which must not import them.
"""

from __future__ import annotations

import re
from typing import Any

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: Any) -> int:
    """A positive byte count; C{ValueError} saying what is wrong (the caller names the key)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE_RE.fullmatch(str(value))
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None or isinstance(value, bool):
        raise ValueError(f"must be a size such as 20GiB or 500MB, got {value!r}")
    size = int(float(match.group(1)) * unit)
    if size <= 0:
        raise ValueError(f"must be more than 0 bytes, got {value!r}")
    return size
