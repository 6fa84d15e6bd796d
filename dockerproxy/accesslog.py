"""The access log: one event per request, in the C{dockerproxy.access} namespace.

Requests a resource answered log themselves (L{dockerproxy.site.ProxyRequest});
requests the channel refused before any resource saw them (too large, too slow,
unparseable) are logged by L{dockerproxy.channel.ProxyChannel}. Both go through
L{log_access}, so every line has the same fields.

The event is also what the metrics count (L{dockerproxy.admin.metrics}): a Site
whose access log has observers (L{access_logger}) hands each event to them as
well as to the log, so the numbers and the log lines never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.logger import ILogObserver, LogEvent, Logger, LogPublisher, globalLogPublisher

NAMESPACE = "dockerproxy.access"
access_log = Logger(namespace=NAMESPACE)

# What a request asked for, by its path (the metrics' "route" label): a bounded set.
ROUTES = (
    "home",
    "ping",
    "auth",
    "manifest",
    "tag",
    "blob",
    "tag_list",
    "referrers",
    "search",
    "other",
)
_KINDS = {"manifests": "manifest", "blobs": "blob", "referrers": "referrers"}


def access_logger(*observers: Callable[[LogEvent], None]) -> Logger:
    """A logger for access events that reach C{observers} as well as the log."""
    if not observers:
        return access_log
    publisher = LogPublisher(globalLogPublisher, *(cast(ILogObserver, o) for o in observers))
    return Logger(namespace=NAMESPACE, observer=publisher)


def route_of(path: bytes) -> str:
    """One of L{ROUTES} for a request path (its query ignored): C{manifest} is a manifest
    by digest, C{tag} one by tag, C{tag_list} the tags of a repository, C{referrers} the
    OCI 1.1 referrers of a manifest, C{search} C{docker search}."""
    path = path.partition(b"?")[0]
    if path == b"/":
        return "home"
    if path == b"/v1/search":
        return "search"
    if not path.startswith(b"/v2/"):
        return "other"
    if path == b"/v2/":
        return "ping"
    if path == b"/v2/auth":
        return "auth"
    head, _, reference = path.rpartition(b"/")
    kind = head.rpartition(b"/")[2].decode("latin-1")
    if kind == "tags" and reference == b"list":
        return "tag_list"
    route = _KINDS.get(kind)
    if route is None or not reference:
        return "other"
    return "tag" if route == "manifest" and b":" not in reference else route


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
    *,
    request_id: str = "-",
    user: str | None = None,
    upstream_status: int | None = None,
    ns: str | None = None,
    image: str | None = None,
    refusal: str | None = None,
    protocol: str = "HTTP/1.1",
    logger: Logger = access_log,
) -> None:
    """One access-log event; C{complete} is False for a response cut short.

    C{upstream_status} is the status of the last upstream answer the request got,
    C{image} the repository it was for (C{docker.io/library/alpine}), C{refusal} why
    the proxy refused it itself (see L{dockerproxy.site.ProxyRequest.refusal}), C{protocol}
    what it came over (C{HTTP/1.1}, C{HTTP/2}: a field of the event, not of the text line).
    """
    logger.info(
        "{client} {user} {method} {path} {status} {bytes} {duration:.3f}s {upstream}"
        " {upstream_status} cache={cache} ns={ns} id={request_id}{aborted}",
        request_id=request_id,
        client=client,
        user=user or "-",
        method=method.decode("ascii", "replace"),
        path=path.decode("ascii", "replace"),
        route=route_of(path),
        status=status,
        bytes=sent,
        duration=duration,
        upstream=upstream or "-",
        upstream_status=upstream_status or "-",
        cache=cache or "-",
        ns=ns or "-",
        image=image,
        refusal=refusal,
        protocol=protocol,
        aborted="" if complete else " aborted",
        complete=complete,
    )
