"""The access log: one event per request, in the C{dockerproxy.access} namespace.

Requests a resource answered log themselves (L{dockerproxy.site.ProxyRequest});
requests the channel refused before any resource saw them (too large, too slow,
unparseable) are logged by L{dockerproxy.channel.ProxyChannel}. Both go through
L{log_access}, so every line has the same fields.
"""

from __future__ import annotations

from twisted.logger import Logger

access_log = Logger(namespace="dockerproxy.access")


def log_access(
    client: str,
    method: bytes,
    path: bytes,
    status: int,
    sent: int,
    duration: float,
    upstream: str | None = None,
    cache: str | None = None,
    complete: bool = True,
) -> None:
    """One access-log event; C{complete} is False for a response cut short."""
    access_log.info(
        "{client} {method} {path} {status} {bytes} {duration:.3f}s {upstream}"
        " cache={cache}{aborted}",
        client=client,
        method=method.decode("ascii", "replace"),
        path=path.decode("ascii", "replace"),
        status=status,
        bytes=sent,
        duration=duration,
        upstream=upstream or "-",
        cache=cache or "-",
        aborted="" if complete else " aborted",
        complete=complete,
    )
