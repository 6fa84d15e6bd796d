"""Where the proxy keeps state it must not lose between runs (its token signing key).

A leaf, like L{dockerproxy.cachedir}: the settings and the services both use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def default_state_dir(environ: Mapping[str, str] = os.environ) -> str:
    """systemd's StateDirectory, else C{$XDG_STATE_HOME/dockerproxy}, else
    C{~/.local/state/dockerproxy}."""
    systemd = environ.get("STATE_DIRECTORY")
    if systemd:
        return systemd.split(":")[0]
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "dockerproxy")
