"""Blob answers that go around the cache: blobs larger than it can keep.

A blob whose announced length is more than the cache could keep (its size
bound, the disk's free space, or C{--max-blob-size}) is never written to disk:
the upstream's answer is relayed to the client as it would be without a cache.
"""

from __future__ import annotations

from twisted.web.server import Request

from dockerproxy.edge import client_request
from dockerproxy.exchange import Proxy, fetch_for_client, relay_response
from dockerproxy.relay import Discard
from dockerproxy.routing import Target
from dockerproxy.upstream import Fetched

# The access log's cache= status of a blob relayed instead of cached.
UNCACHED = "uncached"


async def relay_uncached(proxy: Proxy, request: Request, target: Target, url: str,
                         fetched: Fetched, scope: str, ns: str | None) -> None:
    """Relay C{fetched}, a blob GET's answer the cache does not keep, to the client.

    It was asked for the whole body, without the client's Range and conditions:
    a client that sent any gets the answer to its own request instead.
    """
    request.cache = UNCACHED  # type: ignore[attr-defined]
    if client_request(request).forwarded():
        await drop(fetched)
        fetched = await fetch_for_client(proxy, request, target.upstream, url)
    await relay_response(proxy, request, target.upstream, fetched, scope, ns)


async def drop(fetched: Fetched) -> None:
    """Close a response without reading its (large) body."""
    sink = Discard(limit=0)
    fetched.response.deliverBody(sink)
    await sink.done
