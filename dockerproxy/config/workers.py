"""How many worker processes serve the listeners: C{workers = N|"auto"} and C{--workers}.

One (the default) is the proxy as it always was, one process. More makes the
twistd process a supervisor (L{dockerproxy.workers}) that opens the listeners once
and runs that many workers on them; C{auto} is one per core.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from dockerproxy.config.checks import ConfigError, check_count

DEFAULT_WORKERS = 1
MAX_WORKERS = 256


def workers_config(
    toml: Mapping[str, Any],
    cli: Mapping[str, Any],
    cores: Callable[[], int | None] = os.cpu_count,
) -> int:
    """The number of workers, C{auto} resolved to the cores; the command line wins."""
    if cli.get("workers") is not None:
        return _workers("--workers", cli["workers"], cores)
    if "workers" in toml:
        return _workers("workers", toml["workers"], cores)
    return DEFAULT_WORKERS


def _workers(key: str, value: Any, cores: Callable[[], int | None]) -> int:
    if value == "auto":
        return min(cores() or 1, MAX_WORKERS)
    try:
        return check_count(key, value, maximum=MAX_WORKERS)
    except ConfigError:
        raise ConfigError(
            key, f'must be "auto" or a whole number from 1 to {MAX_WORKERS}, got {value!r}'
        ) from None
