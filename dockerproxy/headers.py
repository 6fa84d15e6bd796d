"""Which headers cross the proxy, in each direction.

Allow-lists, not deny-lists: a header the proxy does not know about is neither
forwarded upstream (it could carry a client's secrets or hop-by-hop state) nor
relayed back (it could describe a body the proxy has changed).
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

from dockerproxy import __version__
from dockerproxy.edge import ClientRequest

USER_AGENT = f"dockerproxy/{__version__}".encode()

# Response headers relayed to the client; Content-Length is set from the response object.
RELAY_RESPONSE = (
    b"content-type",
    b"docker-content-digest",
    b"docker-distribution-api-version",
    b"etag",
    b"content-range",
    b"accept-ranges",
    b"last-modified",
    b"cache-control",
    b"link",
    b"oci-subject",
    b"oci-filters-applied",
    b"warning",
    b"retry-after",
)
RATELIMIT_PREFIX = b"ratelimit-"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def upstream_request_headers(client: ClientRequest) -> Headers:
    """Headers for the upstream request made on behalf of a client request."""
    out = Headers({b"user-agent": [USER_AGENT]})
    if client.accept is not None:
        out.setRawHeaders(b"accept", [client.accept])
    if client.authorization is not None:
        out.setRawHeaders(b"authorization", [client.authorization])
    for name, value in client.forwarded():
        out.setRawHeaders(name, [value])
    return out


def relayed_response_headers(upstream: Headers) -> list[tuple[bytes, list[bytes]]]:
    """The upstream response headers to copy to the client, in a stable order."""
    relayed = []
    for name, values in upstream.getAllRawHeaders():
        lower = name.lower()
        if lower in HOP_BY_HOP:
            continue
        if lower in RELAY_RESPONSE or lower.startswith(RATELIMIT_PREFIX):
            relayed.append((lower, list(values)))
    return relayed
