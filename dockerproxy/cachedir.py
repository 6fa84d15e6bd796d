"""Where the cache lives unless told otherwise.

A leaf shared by the settings (L{dockerproxy.config}) and the cache's admin
command, which must not import them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> str:
    """systemd's CacheDirectory, else the user's cache directory."""
    systemd = environ.get("CACHE_DIRECTORY")
    if systemd:
        return systemd.split(":")[0]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dockerproxy")
