"""Blobs through the mirror: a chain of sources, the local cache first, the upstream last.

Each L{BlobSource} either answers the client or declines, and the next one is
asked: L{LocalBlobs} (a blob committed or being filled), then any shared tier
(the S3 one, L{dockerproxy.mirror.s3.S3Blobs}), then L{UpstreamBlobs}, which
fills the local cache from the upstream with one request per blob however many
clients ask (the clients that ask meanwhile wait for its answer). A fill from
the upstream, once committed, is handed to C{after_fill} (the S3 tier's upload).
With workers, the upstream request is made by one worker at a time (see
L{dockerproxy.cache.sharing}); in a fleet, by one instance at a time (see
L{dockerproxy.fleet.locks}).

Nothing is served from the cache to a client the upstream would refuse (see
L{Remote.readable}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IResponse

from dockerproxy import errors
from dockerproxy.cache.blobs import BlobCache, TooLarge
from dockerproxy.cache.fills import Fill
from dockerproxy.cache.flocks import Busy, Claim
from dockerproxy.cache.sharing import Sharing
from dockerproxy.coalesce import Coalescer
from dockerproxy.digests import Digest
from dockerproxy.mirror.bypass import UpstreamFallback, relay_uncached
from dockerproxy.mirror.remote import CONDITIONS, Remote
from dockerproxy.mirror.responses import HIT, MISS, send_blob
from dockerproxy.pull import Pull
from dockerproxy.relay import discard

if TYPE_CHECKING:
    from dockerproxy.fleet.locks import FillLocks, Lease

log = Logger()

# Seconds to wait for another worker's claim on a blob to be announced before looking
# again (the wait is asked again while the claim stands).
CLAIM_WAIT = 5.0


class BlobSource(Protocol):
    """Where a blob may come from, asked in turn by L{BlobProxy}."""

    async def serve(self, pull: Pull, digest: Digest) -> bool:
        """Answer the client's request for blob C{digest}: C{True} once it is answered (the
        blob, or the upstream's refusal), C{False} to decline and leave it to the next
        source."""


def have(blobs: BlobCache, digest: Digest) -> bool:
    """Committed or being filled, here or by another worker; unlike C{lookup}, counts no
    hit or miss."""
    if digest in blobs or blobs.fill_for(digest) is not None:
        return True
    return blobs.sharing is not None and blobs.sharing.discover(digest)


def fallback(remote: Remote, blobs: BlobCache, pull: Pull) -> UpstreamFallback:
    """Where a client's answer goes on if the fill it follows is abandoned: the upstream."""
    return UpstreamFallback(remote.exchange, pull, blobs.max_blob_size)


class LocalBlobs:
    """The local cache: a committed blob, or one being filled, for a client allowed it."""

    def __init__(self, blobs: BlobCache, remote: Remote) -> None:
        self.blobs = blobs
        self.remote = remote

    async def serve(self, pull: Pull, digest: Digest) -> bool:
        if not have(self.blobs, digest):
            return False
        if not await self.remote.readable(pull, digest):
            return True
        if await send_blob(
            pull.request, self.blobs, digest, HIT, fallback(self.remote, self.blobs, pull)
        ):
            return True
        log.info(
            "blob cache: {digest} is gone (removed beside the proxy, or evicted); a miss",
            digest=digest,
        )
        return False


class UpstreamBlobs:
    """The upstream: HEADs are relayed, a GET fills the local cache (one request per blob).

    The last source: it declines only after waiting for another client's request
    for the same blob, whose failure to reach the upstream it shares, or for
    another instance's fill (C{locks}); then the chain is asked again, and that
    fill serves this client too. C{after_fill} may return a Deferred (the S3
    upload): the fleet's lock is held until it fires.
    """

    def __init__(
        self,
        blobs: BlobCache,
        remote: Remote,
        after_fill: Callable[[Fill], object] | None = None,
        locks: FillLocks | None = None,
    ) -> None:
        self.blobs = blobs
        self.remote = remote
        self.after_fill = after_fill
        self.locks = locks
        # Blob GETs on their way upstream, and the clients waiting for their answers.
        self._fetching = Coalescer()

    async def serve(self, pull: Pull, digest: Digest) -> bool:
        if pull.request.method == b"HEAD":
            fetched = await self.remote.fetch(pull)
            if fetched.response.code == 200:
                self.remote.served(pull, digest)
            await self.remote.relay(pull, fetched)
            return True
        if digest in self._fetching:
            await self._fetching.follow(digest)
            return False
        claim = None
        if self.blobs.sharing is not None:
            claim = await self._claim(digest, self.blobs.sharing)
            if claim is None:
                return False
        return await self._fill(pull, digest, claim)

    async def _claim(self, digest: Digest, sharing: Sharing) -> Claim | None:
        """This worker's claim on fetching C{digest}; None when another worker fetches it
        or has committed it: the chain is asked again, and serves it from there."""
        with self._fetching.lead(digest):  # this worker's other clients wait for it too
            claimed = sharing.claim(digest)
            if isinstance(claimed, Busy):
                await sharing.wait(digest, CLAIM_WAIT)
                return None
        if self.blobs.adopt(digest):  # committed by a worker whose claim just ended
            claimed.release()
            return None
        return claimed

    async def _fill(self, pull: Pull, digest: Digest, claim: Claim | None = None) -> bool:
        """GET the blob upstream into the cache, and serve the client from the fill; False
        when another instance filled it meanwhile (the chain looks again)."""
        try:
            return await self._fetch_and_fill(pull, digest, claim)
        finally:
            if claim is not None and self.blobs.fill_for(digest) is None:
                claim.release()  # no fill took it over: another worker may try

    async def _fetch_and_fill(self, pull: Pull, digest: Digest, claim: Claim | None) -> bool:
        stray: IResponse | None = None
        too_large: TooLarge | None = None
        fill: Fill | None = None
        with self._fetching.lead(digest):
            lease = None
            if self.locks is not None:
                lease = await self.locks.claim(digest)
                if lease is None:
                    return False
            try:
                fetched = await self.remote.fetch(pull, drop=CONDITIONS)
            except BaseException:
                _release(lease)
                raise
            if fetched.response.code == 200:
                self.remote.served(pull, digest)
                if have(self.blobs, digest):
                    stray = fetched.response  # another client's fill got there first
                else:
                    try:
                        fill = self.blobs.start_fill(
                            digest,
                            fetched.response,
                            idle_timeout=self.remote.idle_timeout(pull),
                            claim=claim,
                        )
                    except TooLarge as e:
                        too_large = e
                    else:
                        fill.done.addCallback(self._filled, fill, lease)
                        lease = None  # released once the fill and its upload are over
            _release(lease)
        if fetched.response.code != 200:
            self.remote.answered(pull, fetched.response.code)
            await self.remote.relay(pull, fetched)
            return True
        if too_large is not None:
            log.info("blob cache: relaying, not caching: {why}", why=too_large)
            self.blobs.misses += 1
            await relay_uncached(self.remote.exchange, pull, fetched)
            return True
        if stray is not None:
            await discard(stray)
        upstream = fallback(self.remote, self.blobs, pull)
        if not have(self.blobs, digest):
            # A small body can end within start_fill: failed verification, or not kept for
            # the cache's own reasons (the disk), when the client gets a fresh answer.
            if fill is not None and (fill.abandoned or fill.failure is None):
                await upstream.whole()
                return True
            raise errors.bad_gateway(pull.upstream.url, f"blob {digest} failed verification")
        if not await send_blob(pull.request, self.blobs, digest, MISS, upstream):
            raise errors.bad_gateway(pull.upstream.url, f"blob {digest} vanished from the cache")
        return True

    def _filled(self, ok: bool, fill: Fill, lease: Lease | None) -> bool:
        after = self.after_fill(fill) if ok and self.after_fill is not None else None
        if isinstance(after, Deferred):
            after.addBoth(_release_after, lease)
        else:  # not uploaded: another upload of it is under way, or the fill was not kept
            _release(lease, shared=ok and fill.committed)
        return ok


def _release_after(in_s3: object, lease: Lease | None) -> object:
    _release(lease, shared=in_s3 is True)
    return in_s3


def _release(lease: Lease | None, shared: bool = True) -> None:
    """Let the fleet's waiters go: to S3 when C{shared}, else each to fill on its own."""
    if lease is not None:
        lease.release(shared)


class BlobProxy:
    """Blobs from the local cache, the shared C{tiers} in order, then the upstream."""

    def __init__(
        self,
        blobs: BlobCache,
        remote: Remote,
        tiers: Sequence[BlobSource] = (),
        after_fill: Callable[[Fill], object] | None = None,
        locks: FillLocks | None = None,
    ) -> None:
        self.local = LocalBlobs(blobs, remote)
        self.upstream = UpstreamBlobs(blobs, remote, after_fill, locks)
        self.sources: list[BlobSource] = [self.local, *tiers, self.upstream]

    async def serve(self, pull: Pull, digest: Digest) -> None:
        """Ask each source in turn until one answers (see L{UpstreamBlobs} for why the chain
        may be asked again)."""
        while True:
            for source in self.sources:
                if await source.serve(pull, digest):
                    return
