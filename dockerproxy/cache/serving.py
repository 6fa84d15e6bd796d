"""A blob's file for one response: found, opened, pinned and handed to a L{Sender}.

The request's side of L{BlobCache.serve}, apart from the cache's state: the cache
says where a blob is (committed in its index, or being filled here or by another
worker); this opens that file with a descriptor of the response's own, which stays
valid whatever then happens to the path (a partial renamed by its commit, an
evicted blob unlinked), and pins the blob until the sender is done with it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.server import Request

from dockerproxy.cache.elsewhere import ElsewhereFill
from dockerproxy.cache.eviction import hold
from dockerproxy.cache.fills import Fallback, Fill
from dockerproxy.cache.senders import Sender
from dockerproxy.digests import Digest
from dockerproxy.relay import client_gone

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache

log = Logger()


def serve(
    cache: BlobCache,
    request: Request,
    digest: Digest,
    byte_range: tuple[int, int | None] | None = None,
    fallback: Fallback | None = None,
) -> Deferred[bool]:
    """L{BlobCache.serve}: blob C{digest} of C{cache} as C{request}'s body."""
    if byte_range is not None:
        first, last = byte_range
        if first < 0 or (last is not None and last < first):
            raise ValueError(f"bad byte range {byte_range!r}")
    if client_gone(request):
        return succeed(False)  # gone already: a producer could never be told
    entry = cache.index.get(digest)
    fill: Fill | ElsewhereFill | None = None
    if entry is not None:
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            log.warn("blob cache: {path} vanished", path=str(entry.path))
            cache.index.forget(digest)
            raise KeyError(digest) from None
        size: int | None = entry.size
    else:
        fill = cache.fill_for(digest)
        if fill is None:
            raise KeyError(digest)
        fd = _open_fill(cache, fill)
        size = fill.length
        cache.coalesced += 1
    if cache.sharing is not None and not hold(fd):  # another worker evicts it now
        os.close(fd)
        cache.drop(digest)
        raise KeyError(digest)
    sender = Sender(cache, request, digest, fd, size, fill, byte_range, fallback)
    cache.index.pin(digest)
    sender.start()
    return sender.done


def _open_fill(cache: BlobCache, fill: Fill | ElsewhereFill) -> int:
    """The fill's file: the partial, or, once its commit renamed it on the disk
    pool (the index learns of it a moment later), the committed blob."""
    if isinstance(fill, ElsewhereFill):
        return fill.open()
    try:
        return os.open(fill.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.open(cache.store.blob_path(fill.digest), os.O_RDONLY | os.O_CLOEXEC)
