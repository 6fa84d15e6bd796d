"""A fill: one upstream body written to a partial file, hashed, verified, committed.

A fill reads as fast as the upstream sends and its disk pool can write and hash
(L{fillwriter}: that work is off the reactor thread; its clients never slow it
down) and tells its followers (the L{senders.Sender}s reading the partial file) when bytes
land and when it ends. It ends verified (the cache commits it), or failed (the
upstream's fault: a digest mismatch, a truncated body, an idle timeout), and the
partial file is deleted.

A fill never writes more than the cache could keep when it started (its C{room}),
whether or not anyone still follows it: a body of unknown length that goes on
past it (an endless chunked body, say) is cut off there.

Such a fill, like one that cannot write its file (the disk is full) or commit
it, is I{abandoned} for the cache's own reasons: nothing is wrong with the body,
so its followers are not aborted. Each gets the rest of its answer from its
L{Fallback} (the mirror's asks the upstream for the bytes it has not sent yet),
and a fill that could not be committed is sent whole from the file still open.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from dockerproxy.cache.fillwriter import FillWriter
from dockerproxy.cache.flocks import ABANDONED, FAILED, VERIFIED, Claim
from dockerproxy.cache.store import Partial
from dockerproxy.digests import Digest
from dockerproxy.relay import body_transport, enlarge_socket_reads

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache
    from dockerproxy.cache.senders import Sender


class Fallback(typing.Protocol):
    """Where a client of an abandoned fill gets the rest of its answer (see L{BlobCache.serve}).

    Each returns a Deferred firing C{True} when the response was finished, C{False}
    when it was aborted (the fallback aborts it) or the client left; it never fails.
    """

    def rest(self, first: int, last: int | None) -> Deferred[bool]:
        """Send bytes C{first} to C{last} (inclusive; C{None}: to the end) of the blob as
        the rest of the response, whose status, headers and earlier bytes are set."""

    def whole(self) -> Deferred[bool]:
        """Answer the request from the start: nothing of it is decided or sent yet."""


class Fill(Protocol):
    """One upstream body becoming a blob: the protocol given to C{response.deliverBody}.

    Never paused by its followers: it reads as fast as the upstream sends, whatever
    they do; only a disk pool that falls behind with the writes and the hashing
    (L{FillWriter}) pauses the upstream for a while. C{written} counts the bytes
    in the partial file, C{received} those of the body so far.
    C{done} fires C{True} once the blob is committed, C{False} if it failed; the
    partial file is then gone (or its removal queued on the cache's disk pool).

    It stays L{active} until the cache has settled it: a verified body is still
    active while its commit runs on the disk pool, so its followers hold back
    the last byte until the blob is committed (or known not to be kept).

    C{room} bounds what it writes (C{None}: no bound); C{max_blob_size}, the
    largest blob it accepts, is checked too.
    """

    def __init__(
        self,
        cache: BlobCache,
        digest: Digest,
        partial: Partial,
        length: int | None,
        idle_timeout: float,
        room: int | None = None,
        max_blob_size: int | None = None,
    ) -> None:
        self.cache = cache
        self.digest = digest
        self.length = length
        self.room = room
        self.max_blob_size = max_blob_size
        self.path = partial.path
        self.written = 0
        self.committed = False
        self.failure: str | None = None
        # Given up for the cache's own reasons (room, disk): followers fall back.
        self.abandoned = False
        self.done: Deferred[bool] = Deferred()
        self.received = 0  # bytes of the body so far, written or still queued
        self._hash = digest.hasher()
        self._partial = partial
        self._writer = FillWriter(
            cache.disk,
            partial,
            self._hash,
            progressed=self._progressed,
            failed=self._write_failed,
            pause=self._pause_upstream,
            resume=self._resume_upstream,
        )
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None
        self._body_over = False  # the upstream's body ended (its bytes may still be queued)
        self._ended = False  # no more body: verified, or failed
        self._settled = False  # and the cache is done with it: committed, not kept, failed
        self._followers: list[Sender] = []
        self._reserved = 0  # bytes counted against the cache's bound while filling
        self.claim: Claim | None = None  # this worker's, when workers share the cache

    @property
    def active(self) -> bool:
        """Receiving, or verified and being committed: not settled yet."""
        return not self._settled

    @property
    def followers(self) -> int:
        return len(self._followers)

    def connectionMade(self) -> None:
        enlarge_socket_reads(self.transport)
        self._idle = self.cache.clock.callLater(self._idle_timeout, self._idle_expired)

    def dataReceived(self, data: bytes) -> None:
        if self._ended or self._body_over:
            return
        total = self.received + len(data)
        if self.length is not None and total > self.length:
            self._fail(f"more than the announced {self.length} bytes")
            return
        if self.max_blob_size is not None and total > self.max_blob_size:
            self._fail(f"more than the largest blob allowed ({self.max_blob_size} bytes)")
            return
        if self.room is not None and total > self.room:
            self._abandon(f"more than the cache can keep ({self.room} bytes)")
            return
        self.received = total
        self._writer.add(data)  # written and hashed on the disk pool, in order
        self._still_alive()

    def _progressed(self) -> None:
        """More of the body is in the file: its followers may send it."""
        self.written = self._writer.written
        self._still_alive()
        for follower in list(self._followers):
            follower.fill_progressed()

    def _still_alive(self) -> None:
        if self._idle is not None:
            self._idle.reset(self._idle_timeout)

    def _write_failed(self, failure: Failure) -> None:
        if not self._ended:
            self._abandon(f"cannot write {self.path}: {failure.getErrorMessage()}")

    def _pause_upstream(self) -> None:
        """The disk pool is behind: stop reading until it catches up."""
        if self.transport is not None and not self._body_over:
            body_transport(self).pauseProducing()

    def _resume_upstream(self) -> None:
        if self.transport is not None and not self._body_over and not self._ended:
            body_transport(self).resumeProducing()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self._cancel_idle()
        if self._ended or self._body_over:
            return
        self._body_over = True
        if reason.check(ResponseDone):
            complete = self.length is None or self.received == self.length
        else:
            # A close-delimited body (no length, no chunking) ends with PotentialDataLoss.
            complete = bool(reason.check(PotentialDataLoss)) and self.length is None
        if not complete:
            self._fail(
                f"body ended after {self.received} bytes: {reason.getErrorMessage()}",
                stop_upstream=False,
            )
            return
        # Verified once the last queued bytes are written and hashed; never after a failure.
        self._writer.flushed().addCallback(lambda _: self._verify())

    def _verify(self) -> None:
        if self._ended:
            return
        actual = self._hash.hexdigest()
        if actual != self.digest.hex:
            self._fail(
                f"digest mismatch: the body is {self._hash.name}:{actual}", stop_upstream=False
            )
            return
        self._ended = True
        self.cache._fill_verified(self, self._partial)

    def stop(self, why: str) -> None:
        """Abandon the fill: the partial is deleted and its followers are aborted.

        A verified fill is not stopped: its commit goes on.
        """
        if not self._ended:
            self._fail(why)

    def _abandon(self, why: str) -> None:
        """Give up for the cache's own reasons: the followers get the rest elsewhere."""
        self.abandoned = True
        self._fail(why)

    def _fail(self, why: str, stop_upstream: bool = True) -> None:
        self._ended = True
        self.failure = why
        self._cancel_idle()
        self._writer.close()
        if stop_upstream and self.transport is not None and not self._body_over:
            body_transport(self).stopProducing()
        self.cache.discard(self._partial, after=self._writer.order_key)
        self.cache._fill_failed(self, why)

    def _idle_expired(self) -> None:
        self._idle = None
        self._fail(f"no body bytes for {self._idle_timeout:g} seconds")

    def _cancel_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _follow(self, sender: Sender) -> None:
        self._followers.append(sender)

    def _unfollow(self, sender: Sender) -> None:
        if sender in self._followers:
            self._followers.remove(sender)

    def _notify_end(self) -> None:
        self._settled = True
        for follower in list(self._followers):
            follower.fill_ended(self.committed or self.failure is None)


class FillsInProgress:
    """The fills under way in one cache, by digest, and the bytes they hold of its bound.

    Kept apart from the L{BlobCache} like its index (L{dockerproxy.cache.lruindex}),
    so that the bound reads from two ledgers: the committed blobs there, and here
    what fills of known length reserve from their start and have yet to write.
    """

    def __init__(self) -> None:
        self._fills: dict[Digest, Fill] = {}
        self.reserved = 0

    def get(self, digest: Digest) -> Fill | None:
        return self._fills.get(digest)

    def __contains__(self, digest: object) -> bool:
        return digest in self._fills

    def __len__(self) -> int:
        return len(self._fills)

    def list(self) -> list[Fill]:
        return list(self._fills.values())

    def add(self, fill: Fill) -> None:
        """Under way; a known length counts against the bound from now."""
        self._fills[fill.digest] = fill
        if fill.length is not None:
            fill._reserved = fill.length
            self.reserved += fill.length

    def unwritten(self) -> int:
        """Bytes that fills of known length have yet to write."""
        return sum(
            max(f.length - f.written, 0)
            for f in self._fills.values()
            if f.length is not None and f.active
        )

    def end(self, fill: Fill) -> None:
        """No longer under way: its reservation is returned, its claim released with
        how it ended (other workers may look now) and its followers told."""
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]
        self.reserved -= fill._reserved
        fill._reserved = 0
        if fill.claim is not None:
            fill.claim.release(_outcome(fill))
        fill._notify_end()


def _outcome(fill: Fill) -> str:
    if fill.failure is None:
        return VERIFIED
    return ABANDONED if fill.abandoned else FAILED
