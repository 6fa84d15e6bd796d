"""Responses the mirror writes itself, for content it has: blobs and manifests from the
cache, and redirects to the shared S3 tier.

Whatever the answer came from, a client sees the headers a registry sends:
C{Docker-Content-Digest}, C{Docker-Distribution-Api-Version}, an ETag (the
digest) honoured by C{If-None-Match}, and for blobs C{Accept-Ranges}. Each sets
C{request.cache}, the access log's C{cache=} field.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred
from twisted.web.server import Request

from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.fills import Fallback
from dockerproxy.cache.manifests import CachedManifest
from dockerproxy.digests import Digest
from dockerproxy.edge import client_request

# The access log's cache= statuses.
HIT, MISS, REVALIDATED, STALE, S3, S3_REDIRECT = (
    "hit",
    "miss",
    "revalidated",
    "stale",
    "s3",
    "s3-redirect",
)
STALE_WARNING = b'110 dockerproxy "Response is Stale"'
API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def etag_matches(if_none_match: bytes | None, digest: Digest) -> bool:
    """Whether a client's If-None-Match names this content (quoted or not, or C{*})."""
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix(b"W/").strip(b'"') for t in if_none_match.split(b",")}
    return b"*" in tags or str(digest).encode() in tags


def parse_range(value: bytes | None, size: int | None) -> tuple[int, int | None] | None:
    """One C{bytes=} range as (first, last inclusive or None); None serves the whole body.

    As RFC 9110 says, a Range the proxy cannot use (malformed, several ranges, or a last
    byte before the first) is ignored; one that starts past the end is left for the
    sender to answer 416.
    """
    if not value:
        return None
    match = _RANGE_RE.fullmatch(value.decode("latin-1").strip())
    if match is None:
        return None
    first, last = match.groups()
    if first:
        if last and int(last) < int(first):
            return None
        return int(first), int(last) if last else None
    if last and size is not None:
        count = int(last)
        return max(size - count, 0), None
    return None


def blob_headers(digest: Digest) -> list[tuple[bytes, bytes]]:
    """What a blob answered from the cache says about itself, besides its length."""
    return [
        (b"content-type", b"application/octet-stream"),
        (b"docker-content-digest", str(digest).encode()),
        API_VERSION,
        (b"accept-ranges", b"bytes"),
        (b"etag", f'"{digest}"'.encode()),
    ]


async def send_blob(
    request: Request, blobs: BlobCache, digest: Digest, status: str, fallback: Fallback
) -> bool:
    """Serve the blob committed or being filled; C{False}, with nothing sent, when it is
    not there after all (its file was removed beside the proxy, or it was evicted
    while an access check was on its way): the caller's miss. If the fill it follows
    is abandoned, C{fallback} takes over."""
    cached = blobs.get(digest)
    fill = blobs.fill_for(digest)
    size = cached.size if cached is not None else (fill.length if fill else None)
    byte_range = parse_range(client_request(request).range, size)
    request.cache = status  # type: ignore[attr-defined]
    request.setResponseCode(200)
    headers = blob_headers(digest)
    for name, value in headers:
        request.setHeader(name, value)
    done: Deferred[bool]
    try:
        done = blobs.serve(request, digest, byte_range, fallback)
    except KeyError:
        request.cache = None  # type: ignore[attr-defined]
        for name, _ in headers:
            request.responseHeaders.removeHeader(name)
        return False
    # One hit or miss per request, whatever happened before: a fill from this very
    # request may already be committed (a small blob), and it is still a miss.
    if status == HIT:
        blobs.lookup(digest)
    else:
        blobs.misses += 1
    await done
    return True


def redirect_blob(request: Request, digest: Digest, location: str) -> None:
    """A 307 to C{location} (a presigned S3 URL): the client fetches the bytes itself."""
    request.cache = S3_REDIRECT  # type: ignore[attr-defined]
    request.setResponseCode(307)
    request.setHeader(b"location", location.encode("ascii"))
    request.setHeader(b"docker-content-digest", str(digest).encode())
    request.setHeader(*API_VERSION)
    request.setHeader(b"content-length", b"0")
    request.finish()


def send_manifest(request: Request, manifest: CachedManifest, status: str) -> None:
    """The manifest's exact bytes with its media type (a 304 for a matching
    If-None-Match); a C{stale} one says so in a C{Warning}."""
    request.cache = status  # type: ignore[attr-defined]
    if status == STALE:
        request.setHeader(b"warning", STALE_WARNING)
    request.setHeader(b"content-type", manifest.media_type.encode("latin-1"))
    request.setHeader(b"docker-content-digest", str(manifest.digest).encode())
    request.setHeader(*API_VERSION)
    request.setHeader(b"etag", f'"{manifest.digest}"'.encode())
    if etag_matches(client_request(request).if_none_match, manifest.digest):
        request.setResponseCode(304)
        request.finish()
        return
    request.setResponseCode(200)
    request.setHeader(b"content-length", b"%d" % len(manifest.data))
    if request.method != b"HEAD":
        request.write(manifest.data)
    request.finish()
