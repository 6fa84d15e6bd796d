"""HTTP/2 on the C{ssl:} listeners: C{http2 = true|false} and C{--http2} / C{--no-http2}.

Off by default: bench/throughput.py measured twisted.web's HTTP/2 slower than
HTTP/1.1 for a large blob (see README, Benchmark). Plain C{tcp:} listeners speak
HTTP/1.1 either way (no ALPN, and no h2c upgrade).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockerproxy.config.checks import check_bool

DEFAULT_HTTP2 = False


def http2_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> bool:
    """Whether TLS listeners offer h2 by ALPN; the command line wins."""
    if cli.get("http2") is not None:
        return check_bool("--http2", cli["http2"])
    return check_bool("http2", toml.get("http2", DEFAULT_HTTP2))
