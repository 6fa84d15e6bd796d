"""Blob answers that go around the cache, when the cache cannot keep the blob.

- A blob whose announced length is more than the cache could keep (its size
  bound, the disk's free space, or C{--max-blob-size}) is never written to disk:
  the upstream's answer is relayed as it would be without a cache
  (L{relay_uncached}).
- A fill the cache gives up midway for its own reasons (the disk is full, a
  write fails, a body of unknown length outgrows the cache) leaves clients with a
  status line, headers and part of a body. Each gets the rest with a request of
  its own (L{UpstreamFallback.rest}): C{Range: bytes=<where it is>-}, with its own
  credentials (the upstream decides again whether it may read the blob), relayed
  into the response under way. The upstream must answer 206 with exactly that
  range (and a Content-Length to match), or the client's connection is aborted:
  anything else would splice the wrong bytes into its body. (A client that has
  not been sent a byte yet gets a 502 instead.) Those bytes are not verified by
  the proxy, as relayed ones are not; the client checks the blob's digest, as it
  does for any blob.
  A client that had nothing decided yet (a Range or HEAD waiting for a fill of
  unknown length) gets its request answered afresh (L{UpstreamFallback.whole}).
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from dockerproxy import errors, internals
from dockerproxy.edge import client_request
from dockerproxy.exchange import Proxy, fetch_for_client, relay_response
from dockerproxy.mirror.remote import CONDITIONS
from dockerproxy.pull import Pull
from dockerproxy.relay import Discard, abort_client, client_gone, relay_body
from dockerproxy.upstream import Fetched

log = Logger()

# The access log's cache= status of a blob relayed instead of cached.
UNCACHED = "uncached"
# What the mirror says about a blob it serves from the cache, taken back for a fresh answer.
CACHE_HEADERS = (
    b"content-type",
    b"content-length",
    b"content-range",
    b"accept-ranges",
    b"docker-content-digest",
    b"etag",
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


async def relay_uncached(proxy: Proxy, pull: Pull, fetched: Fetched) -> None:
    """Relay C{fetched}, a blob GET's answer the cache does not keep, to the client.

    It was asked for the whole body, without the client's Range and conditions:
    a client that sent any gets the answer to its own request instead.
    """
    request = pull.request
    request.cache = UNCACHED  # type: ignore[attr-defined]
    if client_request(request).forwarded():
        await drop(fetched.response)
        fetched = await fetch_for_client(proxy, request, pull.upstream, pull.url)
    await relay_response(proxy, request, pull.upstream, fetched, pull.scope, pull.ns)


async def drop(response: IResponse) -> None:
    """Close a response without reading its (large) body."""
    sink = Discard(limit=0)
    response.deliverBody(sink)
    await sink.done


def range_length(response: IResponse, first: int, last: int | None) -> int | None:
    """The body length of C{response} if it is a 206 of exactly C{first}..C{last}
    (C{None}: to the end of the blob); C{None} for anything else."""
    values = response.headers.getRawHeaders(b"content-range") or []
    match = _CONTENT_RANGE.fullmatch(values[0].decode("latin-1").strip()) if values else None
    if response.code != 206 or len(values) != 1 or match is None:
        return None
    start, end, total = int(match[1]), int(match[2]), match[3]
    if start != first or end < start:
        return None
    if last is not None and end != last:
        return None
    if last is None and total != "*" and end != int(total) - 1:
        return None
    length = end - start + 1
    return length if response.length == length else None


@dataclass
class UpstreamFallback:
    """The cache's L{dockerproxy.cache.fills.Fallback} for one client: the upstream.

    C{max_blob_size} bounds a rest of unknown length, as it bounds fills.
    """

    proxy: Proxy
    pull: Pull
    max_blob_size: int | None = None

    @property
    def request(self) -> Request:
        return self.pull.request

    def rest(self, first: int, last: int | None) -> Deferred[bool]:
        return self._run(self._rest(first, last))

    def whole(self) -> Deferred[bool]:
        return self._run(self._whole())

    def _run(self, work: Coroutine[Any, Any, bool]) -> Deferred[bool]:
        d = ensureDeferred(work)
        if not self._gone():
            self.request.notifyFinish().addErrback(lambda _: d.cancel())
        return d.addErrback(self._failed)

    async def _rest(self, first: int, last: int | None) -> bool:
        if self._gone():
            return False
        upstream = self.pull.upstream
        wanted = b"bytes=%d-%s" % (first, b"" if last is None else b"%d" % last)
        fetched = await fetch_for_client(
            self.proxy,
            self.request,
            upstream,
            self.pull.url,
            drop=CONDITIONS,
            extra=((b"range", wanted),),
        )
        response = fetched.response
        length = range_length(response, first, last)
        if length is None or self._gone():
            await drop(response)
            if self._gone():
                return False
            ranges = b", ".join(response.headers.getRawHeaders(b"content-range") or [b"none"])
            raise errors.bad_gateway(
                upstream.url,
                f"asked for {wanted.decode()}, it answered "
                f"{response.code} with range {ranges.decode('latin-1')}",
            )
        if self.max_blob_size is not None and first + length > self.max_blob_size:
            await drop(response)
            raise errors.bad_gateway(
                upstream.url, f"the blob is larger than {self.max_blob_size} bytes"
            )
        relay = relay_body(
            response, self.request, self.proxy.clock, self.proxy.client(upstream).timeouts.idle
        )
        if internals.channel_waiting(self.request.channel):
            relay.pauseProducing()  # the client's socket is full: the channel will resume it
        return await relay.done

    async def _whole(self) -> bool:
        if self._gone():
            return False
        request = self.request
        for name in CACHE_HEADERS:
            request.responseHeaders.removeHeader(name)
        pull = self.pull
        fetched = await fetch_for_client(self.proxy, request, pull.upstream, pull.url)
        await relay_response(self.proxy, request, pull.upstream, fetched, pull.scope, pull.ns)
        return True

    def _gone(self) -> bool:
        return client_gone(self.request) or bool(self.request.finished)

    def _failed(self, failure: Failure) -> bool:
        """Nothing sent yet: a registry error; else the connection is aborted."""
        request = self.request
        if self._gone():
            return False
        log.warn(
            "blob {path}: the upstream could not take over from the cache: {error}",
            path=request.path.decode("latin-1"),
            error=failure.value,
        )
        if isinstance(failure.value, errors.RegistryError) and not request.startedWriting:
            body = errors.write_error(request, failure.value)
            request.write(b"" if request.method == b"HEAD" else body)
            request.finish()
        else:
            abort_client(request)
        return False
