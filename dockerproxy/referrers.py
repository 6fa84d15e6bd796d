"""The OCI 1.1 referrers API: C{/v2/<name>/referrers/<digest>}, relayed, never cached.

The signatures, SBOMs and attestations cosign, notation and oras look for are listed
here by the upstream. The request has already passed what a manifest request passes
(client logins, the allow and deny lists, routing by C{ns}, Host or prefix); the
answer is the upstream's, with its challenge pointed at the proxy. Nothing is cached,
so no listing can reach a client the upstream would refuse. An upstream without the
API answers 404 and clients fall back to the referrers tag schema (C{sha256-<hex>}
tags), which are ordinary manifests.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from twisted.web.server import Request

from dockerproxy import errors
from dockerproxy.exchange import Proxy, fetch_for_client, relay_response
from dockerproxy.headers import relayed_response_headers
from dockerproxy.pull import Pull
from dockerproxy.upstream import HIDDEN_ENCODING

# The referrers list is an image index: as large as a manifest may be.
MAX_REFERRERS = 4 * 1024 * 1024
# A media type (RFC 6838): type/subtype, each at most 127 characters.
_RESTRICTED = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE_RE = re.compile(rf"{_RESTRICTED}/{_RESTRICTED}")


def referrers_query(request: Request) -> str:
    """C{?artifactType=...} for the upstream, or nothing; a 400 for one that is not a
    media type (the filter is passed on, never interpreted)."""
    raw = request.args.get(b"artifactType", [b""])[0]
    if not raw:
        return ""
    value = raw.decode("ascii", "replace")
    if MEDIA_TYPE_RE.fullmatch(value) is None:
        raise errors.RegistryError(
            400, "INVALID_REQUEST", "artifactType must be a media type", {"artifactType": value}
        )
    return "?" + urlencode({"artifactType": value})


async def relay_referrers(proxy: Proxy, pull: Pull) -> None:
    """The upstream's referrers list for C{pull}: a 200 GET read whole (bounded like a
    manifest) and sent with its length, with C{OCI-Filters-Applied}; anything else (a
    HEAD, a 401 challenge, a 404 from an upstream without the API) relayed as it came."""
    request = pull.request
    fetched = await fetch_for_client(proxy, request, pull.upstream, pull.url)
    response = fetched.response
    # Paging links name the upstream's repository and parameters the proxy does not
    # pass on: dropped, and the client has the first page.
    response.headers.removeHeader(b"link")
    if response.code != 200 or request.method != b"GET":
        await relay_response(proxy, request, pull.upstream, fetched, pull.scope, pull.ns)
        return
    body = await proxy.client(pull.upstream).read_small(response, pull.upstream.url, MAX_REFERRERS)
    request.defaultContentType = None
    for name, values in relayed_response_headers(response.headers):
        request.responseHeaders.setRawHeaders(name, values)
    hidden = response.headers.getRawHeaders(HIDDEN_ENCODING)
    if hidden:
        request.responseHeaders.setRawHeaders(b"content-encoding", hidden)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
